//! Writing named tensors as safetensors or as PyTorch's `.pt` (the zip format `torch.save`
//! writes and `torch.load` reads, `weights_only=True` included), every file atomically.
//!
//! The `.pt` file is what `torch.save(model.state_dict(), path)` produces, minus what loading
//! does not need: `archive/data.pkl`, a protocol-2 pickle of an `OrderedDict` whose values are
//! `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())`, each
//! storage a persistent id `('storage', torch.FloatStorage, key, 'cpu', numel)`; the raw
//! little-endian values of storage `key` in `archive/data/{key}` (stored, 64-byte aligned, as
//! torch aligns them for `mmap=True`); `archive/byteorder` (`little`), `archive/version` (`3`),
//! `archive/.format_version` and `archive/.storage_alignment`. The pickle uses only the globals
//! `torch.load`'s `weights_only` unpickler allows.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};

#[cfg(target_endian = "big")]
compile_error!("rnnlm-import writes little-endian tensor files on little-endian targets only");

/// The weight file formats [`write_weights`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// A safetensors file (`safetensors.torch.load_file`).
    Safetensors,
    /// PyTorch's zip checkpoint (`torch.load`).
    PyTorch,
}

impl WeightFormat {
    /// The format a file name asks for: `.safetensors` or `.pt` / `.pth` / `.bin`; `None`
    /// for any other extension.
    pub fn from_path(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "safetensors" => Some(WeightFormat::Safetensors),
            "pt" | "pth" | "bin" => Some(WeightFormat::PyTorch),
            _ => None,
        }
    }

    /// The usual extension, without the dot: `safetensors` or `pt`.
    pub fn extension(self) -> &'static str {
        match self {
            WeightFormat::Safetensors => "safetensors",
            WeightFormat::PyTorch => "pt",
        }
    }
}

/// Why a file could not be written. Every variant names the file; nothing is left at its path
/// (a failed write removes its temporary file, and an existing file is kept as it was).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The operating system refused.
    #[error(
        "cannot write {path}: {reason}; check that its directory exists and is writable and \
         that the disk has room"
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason (in the message, not repeated as the source).
        reason: std::io::Error,
    },
    /// A tensor's element type has no counterpart in the format.
    #[error(
        "cannot write {path}: tensor {key} holds {dtype} values, which {format} files written \
         here do not store; convert it to f32 (TensorData::convert::<f32>) first"
    )]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        key: String,
        /// Its element type.
        dtype: String,
        /// The format.
        format: &'static str,
    },
    /// A tensor's bytes do not fill its shape.
    #[error(
        "cannot write {path}: tensor {key} has {bytes} bytes, but its shape {shape:?} of \
         {dtype} needs {expected}; build the TensorData from values that fill the shape"
    )]
    Size {
        /// The file.
        path: PathBuf,
        /// The tensor.
        key: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Its element type.
        dtype: String,
        /// Bytes it holds.
        bytes: usize,
        /// Bytes the shape needs.
        expected: usize,
    },
    /// Two tensors share a name.
    #[error("cannot write {path}: two tensors are named {key}; every key must be unique")]
    DuplicateKey {
        /// The file.
        path: PathBuf,
        /// The repeated name.
        key: String,
    },
    /// The format's library refused the data.
    #[error("cannot write {path} as a {format} file: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// `safetensors` or `PyTorch zip`.
        format: &'static str,
        /// The library's message.
        message: String,
    },
}

/// Writes `tensors` to `path` in `format` (see [`write_safetensors`], [`write_pytorch`]).
///
/// # Errors
/// As the writer of that format.
pub fn write_weights(
    path: &Path,
    tensors: &[(String, TensorData)],
    format: WeightFormat,
) -> Result<(), WriteError> {
    match format {
        WeightFormat::Safetensors => write_safetensors(path, tensors),
        WeightFormat::PyTorch => write_pytorch(path, tensors),
    }
}

/// Writes `tensors` as a safetensors file (header metadata `{"format": "pt"}`, as
/// `safetensors.torch.save_file` writes), atomically. Each tensor keeps its shape and element
/// type; the file lists them by name.
///
/// # Errors
/// [`WriteError`]: a duplicate key, an element type safetensors lacks (quantized), bytes that do
/// not fill a shape, or the file system's refusal.
pub fn write_safetensors(path: &Path, tensors: &[(String, TensorData)]) -> Result<(), WriteError> {
    check_tensors(path, tensors, "safetensors")?;
    let mut views = Vec::with_capacity(tensors.len());
    for (key, data) in tensors {
        let dtype = safetensors_dtype(data.dtype())
            .ok_or_else(|| dtype_error(path, key, data, "safetensors"))?;
        let view =
            safetensors::tensor::TensorView::new(dtype, data.shape().to_vec(), data.as_bytes())
                .map_err(|e| format_error(path, "safetensors", e))?;
        views.push((key.as_str(), view));
    }
    let metadata = [("format".to_owned(), "pt".to_owned())]
        .into_iter()
        .collect();
    let bytes = safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| format_error(path, "safetensors", e))?;
    write_atomic(path, &bytes)
}

/// Writes `tensors` as PyTorch's zip checkpoint, atomically: `torch.load(path)` (with its
/// default `weights_only=True`) returns an `OrderedDict` of the tensors in the order given,
/// contiguous, on the CPU, without `requires_grad`: a `state_dict()` that
/// `load_state_dict(strict=True)` takes when the names and shapes are the module's.
///
/// # Errors
/// [`WriteError`]: a duplicate key, an element type without a torch storage (bool,
/// quantized), bytes that do not fill a shape, or the file system's refusal.
pub fn write_pytorch(path: &Path, tensors: &[(String, TensorData)]) -> Result<(), WriteError> {
    check_tensors(path, tensors, "PyTorch")?;
    let mut storages = Vec::with_capacity(tensors.len());
    for (key, data) in tensors {
        let storage =
            torch_storage(data.dtype()).ok_or_else(|| dtype_error(path, key, data, "PyTorch"))?;
        storages.push(storage);
    }
    let pickle = state_dict_pickle(tensors, &storages);
    write_atomic_with(path, |file| {
        let zip_error = |e: zip::result::ZipError| format_error(path, "PyTorch zip", e);
        let mut zip = zip::ZipWriter::new(file);
        let mut entry = |name: &str, bytes: &[u8]| -> Result<(), WriteError> {
            // Stored, not deflated, and aligned as torch.save aligns: torch.load(mmap=True)
            // maps the storages in place.
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .with_alignment(64)
                .large_file(bytes.len() as u64 >= u64::from(u32::MAX));
            zip.start_file(format!("archive/{name}"), options)
                .map_err(zip_error)?;
            zip.write_all(bytes)
                .map_err(|reason| io_error(path, reason))
        };
        entry("data.pkl", &pickle)?;
        entry(".format_version", b"1")?;
        entry(".storage_alignment", b"64")?;
        entry("byteorder", b"little")?;
        for (index, (_, data)) in tensors.iter().enumerate() {
            entry(&format!("data/{index}"), data.as_bytes())?;
        }
        entry("version", b"3\n")?;
        zip.finish().map_err(zip_error)?;
        Ok(())
    })
}

/// Writes `bytes` to `path` atomically: into a temporary file in the same directory, flushed
/// to disk, then renamed over `path`, so a reader sees the old file or the new one, never a part.
///
/// # Errors
/// [`WriteError::Io`] naming `path`; the temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with(path, |file| {
        file.write_all(bytes)
            .map_err(|reason| io_error(path, reason))
    })
}

/// Runs `write` on a temporary file beside `path`, then renames it to `path`; removes it on any
/// failure.
fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<(), WriteError>,
) -> Result<(), WriteError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = File::create(&temporary)
        .map_err(|reason| io_error(path, reason))
        .and_then(|mut file| {
            write(&mut file)?;
            file.sync_all().map_err(|reason| io_error(path, reason))
        })
        .and_then(|()| std::fs::rename(&temporary, path).map_err(|reason| io_error(path, reason)));
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Unique keys, and bytes that fill every shape.
fn check_tensors(
    path: &Path,
    tensors: &[(String, TensorData)],
    format: &'static str,
) -> Result<(), WriteError> {
    let mut seen = std::collections::HashSet::new();
    for (key, data) in tensors {
        if !seen.insert(key.as_str()) {
            return Err(WriteError::DuplicateKey {
                path: path.to_owned(),
                key: key.clone(),
            });
        }
        let dtype = data.dtype();
        if matches!(dtype, DType::QFloat(_)) {
            return Err(dtype_error(path, key, data, format));
        }
        let expected = data.shape().iter().product::<usize>() * dtype.size();
        if data.as_bytes().len() != expected {
            return Err(WriteError::Size {
                path: path.to_owned(),
                key: key.clone(),
                shape: data.shape().to_vec(),
                dtype: format!("{dtype:?}"),
                bytes: data.as_bytes().len(),
                expected,
            });
        }
    }
    Ok(())
}

fn safetensors_dtype(dtype: DType) -> Option<safetensors::Dtype> {
    use safetensors::Dtype as St;
    Some(match dtype {
        DType::F64 => St::F64,
        DType::F32 | DType::Flex32 => St::F32,
        DType::F16 => St::F16,
        DType::BF16 => St::BF16,
        DType::I64 => St::I64,
        DType::I32 => St::I32,
        DType::I16 => St::I16,
        DType::I8 => St::I8,
        DType::U64 => St::U64,
        DType::U32 => St::U32,
        DType::U16 => St::U16,
        DType::U8 => St::U8,
        DType::Bool(burn::tensor::BoolStore::Native) => St::BOOL,
        _ => return None,
    })
}

/// The `torch` storage class that holds `dtype` (the legacy typed names torch.save writes).
fn torch_storage(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F64 => "DoubleStorage",
        DType::F32 | DType::Flex32 => "FloatStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
        DType::I64 => "LongStorage",
        DType::I32 => "IntStorage",
        DType::I16 => "ShortStorage",
        DType::I8 => "CharStorage",
        DType::U8 => "ByteStorage",
        _ => return None,
    })
}

fn io_error(path: &Path, reason: std::io::Error) -> WriteError {
    WriteError::Io {
        path: path.to_owned(),
        reason,
    }
}

fn format_error(path: &Path, format: &'static str, error: impl std::fmt::Display) -> WriteError {
    WriteError::Format {
        path: path.to_owned(),
        format,
        message: error.to_string(),
    }
}

fn dtype_error(path: &Path, key: &str, data: &TensorData, format: &'static str) -> WriteError {
    WriteError::Dtype {
        path: path.to_owned(),
        key: key.to_owned(),
        dtype: format!("{:?}", data.dtype()),
        format,
    }
}

/// `data.pkl`: the state dict as torch.save pickles it (protocol 2, without the memo, which
/// only shortens repeated globals).
fn state_dict_pickle(tensors: &[(String, TensorData)], storages: &[&str]) -> Vec<u8> {
    let mut p = Pickle(vec![0x80, 2]); // PROTO 2
    p.empty_ordered_dict();
    p.op(b'('); // MARK: the items, set all at once
    for (index, ((key, data), storage)) in tensors.iter().zip(storages).enumerate() {
        let shape = data.shape().to_vec();
        p.unicode(key);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'('); // MARK: the arguments
        p.op(b'('); // MARK: the persistent id ('storage', class, key, location, numel)
        p.unicode("storage");
        p.global("torch", storage);
        p.unicode(&index.to_string());
        p.unicode("cpu");
        p.int(shape.iter().product());
        p.op(b't'); // TUPLE
        p.op(b'Q'); // BINPERSID
        p.int(0); // storage offset
        p.tuple(&shape);
        p.tuple(&contiguous_strides(&shape));
        p.op(0x89); // NEWFALSE: requires_grad
        p.empty_ordered_dict(); // backward hooks
        p.op(b't'); // TUPLE
        p.op(b'R'); // REDUCE: _rebuild_tensor_v2(*args)
    }
    p.op(b'u'); // SETITEMS
    p.op(b'.'); // STOP
    p.0
}

/// Row-major strides in elements.
fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// A pickle under construction (the few opcodes a state dict needs).
struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, code: u8) {
        self.0.push(code);
    }

    /// GLOBAL `module.name`.
    fn global(&mut self, module: &str, name: &str) {
        self.op(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    /// BINUNICODE.
    fn unicode(&mut self, text: &str) {
        self.op(b'X');
        self.0.extend_from_slice(&(text.len() as u32).to_le_bytes());
        self.0.extend_from_slice(text.as_bytes());
    }

    /// The shortest integer opcode for `value`.
    fn int(&mut self, value: usize) {
        if let Ok(byte) = u8::try_from(value) {
            self.0.extend_from_slice(&[b'K', byte]);
        } else if let Ok(short) = u16::try_from(value) {
            self.op(b'M');
            self.0.extend_from_slice(&short.to_le_bytes());
        } else if let Ok(int) = i32::try_from(value) {
            self.op(b'J');
            self.0.extend_from_slice(&int.to_le_bytes());
        } else {
            // LONG1: little-endian two's complement, with a zero byte where the top bit is set.
            let mut bytes = (value as u64).to_le_bytes().to_vec();
            while bytes.len() > 1 && bytes[bytes.len() - 1] == 0 && bytes[bytes.len() - 2] < 0x80 {
                bytes.pop();
            }
            self.0.extend_from_slice(&[0x8a, bytes.len() as u8]);
            self.0.extend_from_slice(&bytes);
        }
    }

    /// A tuple of integers.
    fn tuple(&mut self, values: &[usize]) {
        if values.is_empty() {
            self.op(b')'); // EMPTY_TUPLE
            return;
        }
        self.op(b'(');
        for &value in values {
            self.int(value);
        }
        self.op(b't');
    }

    /// `collections.OrderedDict()`.
    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b')');
        self.op(b'R');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StateDict;

    fn sample() -> Vec<(String, TensorData)> {
        vec![
            (
                "rnn.weight_ih_l0".to_owned(),
                TensorData::new(
                    (0..12).map(|v| v as f32 * 0.5 - 1.0).collect::<Vec<_>>(),
                    [3, 4],
                ),
            ),
            (
                "rnn.bias".to_owned(),
                TensorData::new(vec![1.5f32, -2.0, 3.25], [3]),
            ),
            // Past the one-byte and two-byte integer opcodes.
            (
                "big".to_owned(),
                TensorData::new(vec![0.25f32; 70_000], [70_000]),
            ),
        ]
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rnnlm-write-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn round_trip(format: WeightFormat) {
        let dir = temp_dir(format.extension());
        let path = dir.join(format!("model.{}", format.extension()));
        write_weights(&path, &sample(), format).unwrap();
        let read = StateDict::read(&path).unwrap();
        assert_eq!(read.len(), 3);
        for (key, data) in sample() {
            let back = read.get(&key).unwrap_or_else(|| panic!("{key} missing"));
            assert_eq!(back.shape(), data.shape(), "{key}");
            assert_eq!(back.as_bytes(), data.as_bytes(), "{key}");
        }
        // Only the file itself: no temporary left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn pytorch_round_trip() {
        round_trip(WeightFormat::PyTorch);
    }

    #[test]
    fn safetensors_round_trip() {
        round_trip(WeightFormat::Safetensors);
    }

    #[test]
    fn pytorch_layout_is_torchs() {
        let dir = temp_dir("layout");
        let path = dir.join("m.pt");
        write_pytorch(&path, &sample()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let names: Vec<String> = archive
            .file_names()
            .map(|name| name.unwrap().into_owned())
            .collect();
        for name in [
            "archive/data.pkl",
            "archive/version",
            "archive/byteorder",
            "archive/data/2",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        let entry = archive.by_name("archive/data/1").unwrap();
        assert_eq!(entry.compression(), zip::CompressionMethod::Stored);
        assert_eq!(entry.data_start().map(|start| start % 64), Some(0));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn pickle_ints_and_strides() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(contiguous_strides(&[]), Vec::<usize>::new());
        let mut p = Pickle(Vec::new());
        p.int(255);
        p.int(256);
        p.int(70_000);
        p.int(1 << 32);
        assert_eq!(
            p.0,
            [
                &[b'K', 255][..],
                &[b'M', 0, 1],
                &[b'J', 0x70, 0x11, 1, 0],
                &[0x8a, 5, 0, 0, 0, 0, 1]
            ]
            .concat()
        );
    }

    #[test]
    fn failures_leave_no_file() {
        let dir = temp_dir("fail");
        let path = dir.join("dup.pt");
        let mut tensors = sample();
        tensors.push(tensors[0].clone());
        assert!(matches!(
            write_pytorch(&path, &tensors),
            Err(WriteError::DuplicateKey { .. })
        ));
        let ints = vec![("flags".to_owned(), TensorData::new(vec![true, false], [2]))];
        let err = write_pytorch(&path, &ints).unwrap_err();
        assert!(matches!(err, WriteError::Dtype { .. }), "{err}");
        assert!(err.to_string().contains("dup.pt"), "{err}");
        let missing = dir.join("no-such-dir").join("m.safetensors");
        let err = write_safetensors(&missing, &sample()).unwrap_err();
        assert!(matches!(err, WriteError::Io { .. }), "{err}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn format_from_extension() {
        assert_eq!(
            WeightFormat::from_path("a/b.PT".as_ref()),
            Some(WeightFormat::PyTorch)
        );
        assert_eq!(
            WeightFormat::from_path("m.safetensors".as_ref()),
            Some(WeightFormat::Safetensors)
        );
        assert_eq!(WeightFormat::from_path("m.onnx".as_ref()), None);
        assert_eq!(WeightFormat::from_path("m".as_ref()), None);
    }
}
