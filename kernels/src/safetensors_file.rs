//! Reading safetensors files with the header checked in Rust first (length, JSON, dtypes,
//! shapes, offsets), so no malformed byte reaches libtorch. Owns the file format only; it must
//! not know what the tensors are for (model names and shapes are `checkpoint.rs`'s).
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use tch::{Kind, Tensor};

/// The longest JSON header read (the safetensors library's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// The most dimensions a tensor may have.
pub const MAX_RANK: usize = 16;
/// The largest single dimension (larger ones only make sense next to a zero, and overflow
/// libtorch's stride arithmetic).
pub const MAX_DIM: u64 = i32::MAX as u64;

/// A dtype libtorch can hold, as safetensors spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    I16,
    I32,
    I64,
    BF16,
    F16,
    F32,
    F64,
}

impl Dtype {
    const ALL: [(&'static str, Dtype, usize, Kind); 10] = [
        ("BOOL", Dtype::Bool, 1, Kind::Bool),
        ("U8", Dtype::U8, 1, Kind::Uint8),
        ("I8", Dtype::I8, 1, Kind::Int8),
        ("I16", Dtype::I16, 2, Kind::Int16),
        ("I32", Dtype::I32, 4, Kind::Int),
        ("I64", Dtype::I64, 8, Kind::Int64),
        ("BF16", Dtype::BF16, 2, Kind::BFloat16),
        ("F16", Dtype::F16, 2, Kind::Half),
        ("F32", Dtype::F32, 4, Kind::Float),
        ("F64", Dtype::F64, 8, Kind::Double),
    ];

    fn parse(name: &str) -> Option<Dtype> {
        Self::ALL.iter().find(|e| e.0 == name).map(|e| e.1)
    }

    fn entry(self) -> &'static (&'static str, Dtype, usize, Kind) {
        Self::ALL
            .iter()
            .find(|e| e.1 == self)
            .unwrap_or(&Self::ALL[0])
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        self.entry().2
    }

    pub fn kind(self) -> Kind {
        self.entry().3
    }
}

/// One tensor of a checked header: where its bytes lie in the data section (after the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    pub dtype: Dtype,
    pub shape: Vec<i64>,
    pub start: usize,
    pub end: usize,
}

/// A checked header: the data section starts at byte `data_start` of the file, and every
/// tensor's bytes lie in it, in order, without gaps or overlaps, up to the file's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub data_start: usize,
    pub tensors: BTreeMap<String, TensorEntry>,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Safetensors {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

const FIX: &str = "the file is truncated or not a safetensors file: download or export it again";

/// Checks the header of the safetensors file `path`, of `file_len` bytes, whose first bytes
/// are `prefix` (at least the 8-byte length and the JSON header; the whole file will do).
pub fn check_header(prefix: &[u8], file_len: u64, path: &Path) -> Result<Header> {
    let len_bytes: [u8; 8] = prefix
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            bad(
                path,
                format!("shorter than the 8-byte header length; {FIX}"),
            )
        })?;
    let n = u64::from_le_bytes(len_bytes);
    if n > MAX_HEADER_BYTES || n > file_len.saturating_sub(8) {
        return Err(bad(
            path,
            format!(
                "the header length {n} is past the end of the {file_len}-byte file or over \
                 {MAX_HEADER_BYTES} bytes; {FIX}"
            ),
        ));
    }
    let data_start = 8 + n as usize;
    let json = prefix
        .get(8..data_start)
        .ok_or_else(|| bad(path, format!("the header is cut short; {FIX}")))?;
    let map: serde_json::Map<String, Value> = serde_json::from_slice(json).map_err(|e| {
        bad(
            path,
            format!("the header is not a JSON object ({e}); {FIX}"),
        )
    })?;
    let data_len = (file_len - data_start as u64) as usize;
    let mut tensors = BTreeMap::new();
    for (name, v) in map.iter().filter(|(k, _)| *k != "__metadata__") {
        let entry = tensor_entry(v, data_len)
            .map_err(|why| bad(path, format!("tensor `{name}`: {why}; {FIX}")))?;
        tensors.insert(name.clone(), entry);
    }
    check_layout(&tensors, data_len).map_err(|why| bad(path, format!("{why}; {FIX}")))?;
    Ok(Header {
        data_start,
        tensors,
    })
}

/// One header entry (`{"dtype", "shape", "data_offsets"}`), its bytes within `data_len`.
fn tensor_entry(v: &Value, data_len: usize) -> std::result::Result<TensorEntry, String> {
    let dtype_name = v["dtype"].as_str().ok_or("no `dtype` string")?;
    let dtype = Dtype::parse(dtype_name).ok_or_else(|| {
        format!("dtype {dtype_name:?} is not supported (BOOL, U8, I8, I16, I32, I64, BF16, F16, F32, F64)")
    })?;
    let dims = v["shape"].as_array().ok_or("no `shape` list")?;
    if dims.len() > MAX_RANK {
        return Err(format!("{} dimensions (at most {MAX_RANK})", dims.len()));
    }
    let shape: Vec<u64> = dims
        .iter()
        .map(|d| d.as_u64().filter(|d| *d <= MAX_DIM))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            format!(
                "shape {} is not a list of sizes up to {MAX_DIM}",
                v["shape"]
            )
        })?;
    let offsets: Vec<u64> = v["data_offsets"]
        .as_array()
        .and_then(|o| o.iter().map(Value::as_u64).collect())
        .filter(|o: &Vec<u64>| o.len() == 2)
        .ok_or("no `data_offsets` [start, end]")?;
    let (start, end) = (offsets[0], offsets[1]);
    if start > end || end > data_len as u64 {
        return Err(format!(
            "data_offsets [{start}, {end}] are not within the {data_len} bytes of data"
        ));
    }
    let bytes = shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d));
    if bytes != Some(end - start) {
        return Err(format!(
            "shape {shape:?} of {dtype_name} needs {} bytes but data_offsets [{start}, {end}] \
             hold {}",
            bytes.map_or("too many".to_string(), |b| b.to_string()),
            end - start
        ));
    }
    Ok(TensorEntry {
        dtype,
        shape: shape.iter().map(|&d| d as i64).collect(),
        start: start as usize,
        end: end as usize,
    })
}

/// The tensors, by offset, tile the data section exactly (no gap, no overlap, nothing after).
fn check_layout(
    tensors: &BTreeMap<String, TensorEntry>,
    data_len: usize,
) -> std::result::Result<(), String> {
    let mut by_offset: Vec<(&String, &TensorEntry)> = tensors.iter().collect();
    by_offset.sort_by_key(|(_, t)| (t.start, t.end));
    let mut at = 0;
    for (name, t) in by_offset {
        if t.start != at {
            let how = if t.start < at {
                "overlaps"
            } else {
                "leaves a gap before"
            };
            return Err(format!("tensor `{name}` {how} the data at byte {at}"));
        }
        at = t.end;
    }
    if at != data_len {
        return Err(format!(
            "the tensors end at byte {at} of the {data_len}-byte data section"
        ));
    }
    Ok(())
}

/// The checked header of the safetensors file at `path`, reading only the header.
pub fn read_header(path: &Path) -> Result<Header> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| {
        bad(
            path,
            format!("shorter than the 8-byte header length; {FIX}"),
        )
    })?;
    let n = u64::from_le_bytes(len).min(MAX_HEADER_BYTES.min(file_len.saturating_sub(8)));
    let mut prefix = len.to_vec();
    f.take(n)
        .read_to_end(&mut prefix)
        .map_err(|e| Error::io(path, e))?;
    check_header(&prefix, file_len, path)
}

/// Every tensor of the safetensors file `bytes` (read from `path`), in its own dtype on the
/// CPU, after [`check_header`].
pub fn tensors_from_bytes(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let header = check_header(bytes, bytes.len() as u64, path)?;
    let data = &bytes[header.data_start..];
    header
        .tensors
        .into_iter()
        .map(|(name, t)| {
            let tensor = Tensor::f_from_data_size(&data[t.start..t.end], &t.shape, t.dtype.kind())
                .map_err(|e| bad(path, format!("tensor `{name}`: {e}")))?;
            Ok((name, tensor))
        })
        .collect()
}

/// Every tensor of the safetensors file at `path` (floating-point ones as fp32) on the CPU.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let tensors = tensors_from_bytes(&bytes, path)?;
    Ok(tensors
        .into_iter()
        .map(|(n, t)| {
            let t = if t.is_floating_point() {
                t.to_kind(Kind::Float)
            } else {
                t
            };
            (n, t)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file of `header` (JSON) followed by `data`.
    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    fn err(bytes: &[u8]) -> String {
        tensors_from_bytes(bytes, Path::new("w.safetensors"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_written_file_reads_back() {
        let dir = std::env::temp_dir().join(format!("st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
        let b = Tensor::from_slice(&[7i64]);
        let empty = Tensor::zeros([0, 3], (Kind::Half, tch::Device::Cpu));
        Tensor::write_safetensors(&[("a", &a), ("b", &b), ("e", &empty)], &path).unwrap();
        let read = read_safetensors(&path).unwrap();
        assert_eq!(read["a"].size(), [2, 2]);
        assert!(read["a"].equal(&a));
        assert_eq!(read["b"].kind(), Kind::Int64);
        assert_eq!(read["e"].size(), [0, 3]);
        let header = read_header(&path).unwrap();
        assert_eq!(header.tensors["a"].shape, [2, 2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_headers_are_errors_naming_file_and_tensor() {
        let ok = r#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        assert!(tensors_from_bytes(&file(ok, &[0; 8]), Path::new("w")).is_ok());
        // Header length past the end / huge.
        let mut huge = file(ok, &[0; 8]);
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err(&huge).contains("past the end"));
        assert!(err(&[1, 2, 3]).contains("shorter than"));
        assert!(err(&file("[1]", &[])).contains("not a JSON object"));
        let cases = [
            (
                r#"{"t":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#,
                "not supported",
            ),
            (
                r#"{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                "needs 12 bytes",
            ),
            (
                r#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,80]}}"#,
                "not within",
            ),
            (
                r#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
                "not within",
            ),
            (
                r#"{"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
                "not a list of sizes",
            ),
            // A zero next to a dimension no stride can hold.
            (
                r#"{"t":{"dtype":"F32","shape":[0,9223372036854775807],"data_offsets":[0,0]},"u":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}"#,
                "not a list of sizes",
            ),
            (
                r#"{"t":{"dtype":"F32","shape":[65536,65536,65536,65536],"data_offsets":[0,8]}}"#,
                "needs",
            ),
            (
                r#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#,
                "data_offsets",
            ),
            (r#"{"t":{"shape":[2],"data_offsets":[0,8]}}"#, "dtype"),
            (
                r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"u":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                "overlaps",
            ),
            (
                r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
                "gap",
            ),
            (
                r#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                "end at byte 4",
            ),
        ];
        for (header, want) in cases {
            let msg = err(&file(header, &[0; 8]));
            assert!(
                msg.contains("w.safetensors") && msg.contains(want),
                "{header}: {msg}"
            );
            if !want.contains("end at") && !want.contains("not supported") {
                assert!(msg.contains("`t`") || msg.contains("`u`"), "{msg}");
            }
        }
    }
}
