//! PyO3 bindings for `engine._native`. The checks themselves live in `checks.rs`
//! (with the 64-byte block classifier they use in `block.rs`).
//!
//! Every function takes one Arrow array through the Arrow PyCapsule interface
//! (`__arrow_c_array__`), reads it zero-copy, computes the result with the GIL
//! released and returns a `pyarrow.Array` (imported through the same interface).
//! Accepted input types: `string`, `large_string`, `string_view` and `null`.
//! Nulls propagate: a null input slot yields a null output slot.
//!
//! No Rust panic can escape: the whole computation runs under `catch_unwind`
//! and any panic (there should be none) becomes a `NativeError`.

mod block;
pub mod checks;

use checks::Value;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema, from_ffi, to_ffi};
use arrow_array::{
    Array, ArrayRef, BooleanArray, LargeStringArray, StringArray, StringViewArray, UInt32Array,
};
use arrow_buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow_data::ArrayData;
use arrow_schema::DataType;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCapsule, PyTuple};

create_exception!(
    engine._native,
    NativeError,
    PyException,
    "Raised by engine._native for unsupported input (e.g. a non-string Arrow array) or an internal failure."
);

const SCHEMA_CAPSULE: &std::ffi::CStr = c"arrow_schema";
const ARRAY_CAPSULE: &std::ffi::CStr = c"arrow_array";

// ------------------------------------------------------------------ input

/// A borrowed view of one imported string array, giving the bytes of slot `i`
/// without ever panicking, even on malformed offsets or views.
enum Strings {
    Utf8(StringArray),
    LargeUtf8(LargeStringArray),
    View(StringViewArray),
    /// Arrow `null` type: every slot is null.
    Null(usize),
}

impl Strings {
    fn len(&self) -> usize {
        match self {
            Strings::Utf8(a) => a.len(),
            Strings::LargeUtf8(a) => a.len(),
            Strings::View(a) => a.len(),
            Strings::Null(n) => *n,
        }
    }

    fn nulls(&self) -> Option<NullBuffer> {
        match self {
            Strings::Utf8(a) => a.nulls().cloned(),
            Strings::LargeUtf8(a) => a.nulls().cloned(),
            Strings::View(a) => a.nulls().cloned(),
            Strings::Null(n) => Some(NullBuffer::new_null(*n)),
        }
    }

    /// Evaluate `f` on every slot (null slots included; their result is masked by
    /// the null buffer). The match on the layout is hoisted out of the loop.
    fn map_bool(&self, f: impl Fn(Value<'_>) -> bool) -> BooleanArray {
        let len = self.len();
        let values = match self {
            Strings::Utf8(a) => {
                let (offsets, data) = (a.value_offsets(), a.value_data());
                BooleanBuffer::collect_bool(len, |i| f(offset_slot(offsets, data, i)))
            }
            Strings::LargeUtf8(a) => {
                let (offsets, data) = (a.value_offsets(), a.value_data());
                BooleanBuffer::collect_bool(len, |i| f(offset_slot(offsets, data, i)))
            }
            Strings::View(a) => {
                let views = Views::new(a);
                BooleanBuffer::collect_bool(len, |i| f(views.slot(i)))
            }
            Strings::Null(_) => BooleanBuffer::new_unset(len),
        };
        BooleanArray::new(values, self.nulls())
    }

    fn map_u32(&self, f: impl Fn(Value<'_>) -> u32) -> UInt32Array {
        let len = self.len();
        let values: Vec<u32> = match self {
            Strings::Utf8(a) => {
                let (offsets, data) = (a.value_offsets(), a.value_data());
                (0..len).map(|i| f(offset_slot(offsets, data, i))).collect()
            }
            Strings::LargeUtf8(a) => {
                let (offsets, data) = (a.value_offsets(), a.value_data());
                (0..len).map(|i| f(offset_slot(offsets, data, i))).collect()
            }
            Strings::View(a) => {
                let views = Views::new(a);
                (0..len).map(|i| f(views.slot(i))).collect()
            }
            Strings::Null(_) => vec![0; len],
        };
        UInt32Array::new(ScalarBuffer::from(values), self.nulls())
    }
}

const EMPTY: Value<'static> = Value::EMPTY;

/// Slot `i` of an offsets-based (`string` / `large_string`) array, as a [`Value`]
/// whose window runs to the end of the data buffer (so the checks can read whole
/// 64-byte blocks without copying). Out-of-range or negative offsets give an empty
/// value instead of a panic.
#[inline(always)]
fn offset_slot<'a, O: Copy + TryInto<usize>>(offsets: &[O], data: &'a [u8], i: usize) -> Value<'a> {
    let (Some(&start), Some(&end)) = (offsets.get(i), offsets.get(i.wrapping_add(1))) else {
        return EMPTY;
    };
    match (start.try_into(), end.try_into()) {
        (Ok(start), Ok(end)) if start <= end && end <= data.len() => {
            Value::new(data.get(start..).unwrap_or_default(), end - start)
        }
        _ => EMPTY,
    }
}

/// Read access to the slots of a `string_view` array. A view is 16 bytes: the length
/// (u32), then either the value itself (length <= 12) or a 4-byte prefix, the buffer
/// index and the offset (u32 each).
struct Views<'a> {
    views: &'a [u128],
    /// Where values live: `[0]` is the views buffer as bytes (view `i` starts at byte
    /// `16 * i`; an inline value's window continues over the following views), then
    /// the data buffers, then an empty region that out-of-range buffer indices are
    /// clamped to.
    regions: Vec<&'a [u8]>,
}

impl<'a> Views<'a> {
    fn new(array: &'a StringViewArray) -> Self {
        let mut regions = vec![array.views().inner().as_slice()];
        regions.extend(array.data_buffers().iter().map(|b| b.as_slice()));
        regions.push(&[]);
        Self {
            views: array.views(),
            regions,
        }
    }

    /// Slot `i`. Inline and out-of-line values are told apart with integer masks
    /// rather than a branch: with mixed lengths that branch is mispredicted often,
    /// which costs more than the whole check. A view pointing outside its buffers
    /// gives an empty or truncated value instead of a panic.
    #[inline(always)]
    fn slot(&self, i: usize) -> Value<'a> {
        let view = self.views.get(i).copied().unwrap_or_default();
        let len = view as u32 as usize;
        let inline = (usize::from(len <= 12)).wrapping_neg(); // all ones if inline
        let last = self.regions.len() - 1; // the empty region
        let region = !inline & ((view >> 64) as u32 as usize).saturating_add(1).min(last);
        let start = (inline & (i.wrapping_mul(16) | 4)) | (!inline & (view >> 96) as u32 as usize);
        let base = self.regions.get(region).copied().unwrap_or_default();
        Value::new(base.get(start..).unwrap_or_default(), len)
    }
}

fn describe(obj: &Bound<'_, PyAny>) -> String {
    let ty = obj.get_type();
    match (ty.module(), ty.qualname()) {
        (Ok(m), Ok(q)) => format!("{m}.{q}"),
        (_, Ok(q)) => q.to_string(),
        _ => "<unknown type>".to_string(),
    }
}

/// Import `obj` through `__arrow_c_array__` without copying.
fn import_strings(obj: &Bound<'_, PyAny>) -> PyResult<Strings> {
    let py = obj.py();
    if !obj.hasattr(intern!(py, "__arrow_c_array__"))? {
        let hint = if obj.hasattr(intern!(py, "__arrow_c_stream__"))? {
            " (it only exports __arrow_c_stream__: pass its chunks one by one, \
             e.g. pyarrow ChunkedArray.chunks or polars Series.to_arrow())"
        } else {
            ""
        };
        return Err(NativeError::new_err(format!(
            "expected an Arrow array implementing __arrow_c_array__ (pyarrow.Array, ...), got {}{hint}",
            describe(obj)
        )));
    }
    let exported = obj.call_method0(intern!(py, "__arrow_c_array__"))?;
    let Ok((schema_cap, array_cap)) =
        exported.extract::<(Bound<'_, PyCapsule>, Bound<'_, PyCapsule>)>()
    else {
        return Err(NativeError::new_err(format!(
            "{}.__arrow_c_array__() did not return a (schema, array) pair of capsules",
            describe(obj)
        )));
    };
    let capsule_error = |which: &str, e: PyErr| {
        NativeError::new_err(format!(
            "{}.__arrow_c_array__() returned a bad {which} capsule: {e}",
            describe(obj)
        ))
    };
    let schema_ptr = schema_cap
        .pointer_checked(Some(SCHEMA_CAPSULE))
        .map_err(|e| capsule_error("\"arrow_schema\"", e))?;
    let array_ptr = array_cap
        .pointer_checked(Some(ARRAY_CAPSULE))
        .map_err(|e| capsule_error("\"arrow_array\"", e))?;
    // SAFETY: the capsule named "arrow_schema" holds a live ArrowSchema per the
    // Arrow PyCapsule interface; we only borrow it while the capsule is alive.
    let schema = unsafe { &*schema_ptr.as_ptr().cast::<FFI_ArrowSchema>() };
    let data_type = DataType::try_from(schema).map_err(|e| {
        NativeError::new_err(format!(
            "unsupported Arrow type from {} (format {:?}): {e}",
            describe(obj),
            schema.format()
        ))
    })?;
    if !matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    ) {
        // The array capsule is left untouched; its destructor releases it.
        return Err(NativeError::new_err(format!(
            "unsupported Arrow type {data_type} from {}: expected string, large_string or string_view",
            describe(obj)
        )));
    }
    // SAFETY: the capsule named "arrow_array" holds an ArrowArray per the Arrow
    // PyCapsule interface. `from_raw` moves it out and marks the original as
    // released, so the capsule destructor will not release it a second time;
    // the imported buffers keep the producer's memory alive (zero-copy).
    let array = unsafe { FFI_ArrowArray::from_raw(array_ptr.as_ptr().cast::<FFI_ArrowArray>()) };
    if array.is_released() {
        return Err(NativeError::new_err(format!(
            "the Arrow array exported by {} was already consumed",
            describe(obj)
        )));
    }
    guard(|| {
        // SAFETY: `array`/`schema` come from a producer of the C Data Interface.
        let data: ArrayData = unsafe { from_ffi(array, schema) }
            .map_err(|e| format!("cannot import Arrow array: {e}"))?;
        Ok(match data.data_type() {
            DataType::Utf8 => Strings::Utf8(StringArray::from(data)),
            DataType::LargeUtf8 => Strings::LargeUtf8(LargeStringArray::from(data)),
            DataType::Utf8View => Strings::View(StringViewArray::from(data)),
            DataType::Null => Strings::Null(data.len()),
            other => return Err(format!("unsupported Arrow type {other}")),
        })
    })
}

// ------------------------------------------------------------------ output

/// Carrier handed to `pyarrow.array()`, which imports it via `__arrow_c_array__`.
/// Not registered in the module: it never reaches user code.
#[pyclass(frozen, module = "engine._native", name = "_ArrowExport")]
struct ArrowExport {
    data: ArrayData,
}

#[pymethods]
impl ArrowExport {
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        // The spec allows ignoring the requested schema.
        let _ = requested_schema;
        let (array, schema) = to_ffi(&self.data)
            .map_err(|e| NativeError::new_err(format!("cannot export result: {e}")))?;
        // The capsules own the structs; dropping them calls `release` unless the
        // consumer has moved the contents out (which sets `release` to NULL).
        let schema = PyCapsule::new_with_value(py, schema, SCHEMA_CAPSULE)?;
        let array = PyCapsule::new_with_value(py, array, ARRAY_CAPSULE)?;
        PyTuple::new(py, [schema, array])
    }
}

fn to_pyarrow(py: Python<'_>, array: ArrayRef) -> PyResult<Bound<'_, PyAny>> {
    static PA_ARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let pa_array = PA_ARRAY.get_or_try_init(py, || {
        py.import("pyarrow")?.getattr("array").map(Bound::unbind)
    })?;
    let carrier = Bound::new(
        py,
        ArrowExport {
            data: array.to_data(),
        },
    )?;
    pa_array.bind(py).call1((carrier,))
}

// ------------------------------------------------------------------ plumbing

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Run `f`, turning both its error and any panic into a `NativeError`.
fn guard<T>(f: impl FnOnce() -> Result<T, String>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(msg)) => Err(NativeError::new_err(msg)),
        Err(payload) => Err(NativeError::new_err(format!(
            "internal error in engine._native: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

/// Import `arr`, run `compute` on it with the GIL released, return a pyarrow array.
fn run<'py, A: Array + 'static>(
    arr: &Bound<'py, PyAny>,
    compute: impl FnOnce(&Strings) -> A + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let py = arr.py();
    let strings = import_strings(arr)?;
    let result: ArrayRef = py.detach(|| guard(|| Ok(Arc::new(compute(&strings)) as ArrayRef)))?;
    to_pyarrow(py, result)
}

// ------------------------------------------------------------------ functions

/// Canonical dashed UUID (8-4-4-4-12 hex, case-insensitive) -> pyarrow.BooleanArray.
#[pyfunction]
fn is_uuid<'py>(arr: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    run(arr, |s| s.map_bool(checks::is_uuid_value))
}

/// Pragmatic e-mail address syntax -> pyarrow.BooleanArray.
#[pyfunction]
fn is_email<'py>(arr: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    run(arr, |s| s.map_bool(checks::is_email_value))
}

/// Kebab-case slug `^[a-z0-9]+(-[a-z0-9]+)*$`, at most 200 bytes -> pyarrow.BooleanArray.
#[pyfunction]
fn is_slug<'py>(arr: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    run(arr, |s| s.map_bool(checks::is_slug_value))
}

/// `prefix` followed by 1..=max_len of `[A-Za-z0-9_-]` -> pyarrow.BooleanArray.
#[pyfunction]
fn is_token_id<'py>(
    arr: &Bound<'py, PyAny>,
    prefix: &str,
    max_len: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let prefix = prefix.as_bytes().to_vec();
    run(arr, move |s| {
        s.map_bool(|v| checks::is_token_id_value(v, &prefix, max_len))
    })
}

/// Number of Unicode-whitespace-separated words -> pyarrow.UInt32Array.
#[pyfunction]
fn word_count<'py>(arr: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    run(arr, |s| s.map_u32(checks::word_count_value))
}

/// Offset of the first byte of `data` that is not part of valid UTF-8, or None when all of it
/// is (the standard library's validator: an ASCII fast path, ~10x Python's `bytes.decode`,
/// which also builds the string). Reads the bytes in place with the GIL released.
#[pyfunction]
fn utf8_error_offset(py: Python<'_>, data: &[u8]) -> Option<usize> {
    py.detach(|| std::str::from_utf8(data).err().map(|e| e.valid_up_to()))
}

#[pymodule(gil_used = false)]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("NativeError", m.py().get_type::<NativeError>())?;
    m.add_function(wrap_pyfunction!(is_uuid, m)?)?;
    m.add_function(wrap_pyfunction!(is_email, m)?)?;
    m.add_function(wrap_pyfunction!(is_slug, m)?)?;
    m.add_function(wrap_pyfunction!(is_token_id, m)?)?;
    m.add_function(wrap_pyfunction!(word_count, m)?)?;
    m.add_function(wrap_pyfunction!(utf8_error_offset, m)?)?;
    Ok(())
}
