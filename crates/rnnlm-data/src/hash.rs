//! Sha1 of files, read in chunks, as lowercase hex: what a download and a prepared file are
//! checked by.

use std::io::Read;
use std::path::Path;

use sha1::{Digest, Sha1};

use crate::DataError;

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sha1 of a file, lowercase hex, read in chunks (memory does not grow with the file).
pub fn sha1_of_file(path: &Path) -> Result<String, DataError> {
    let io = |source| DataError::Io {
        path: path.to_owned(),
        reason: source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(hex(&hasher.finalize()))
}
