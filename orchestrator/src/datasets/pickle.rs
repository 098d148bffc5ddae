//! A minimal Python pickle interpreter (protocols 0-5) for the CIFAR-100 python files: dicts,
//! lists, ints, bytes, str, numpy arrays. Owns opcode decoding; it must not touch files.
//!
//! Python objects are not constructed: a call (REDUCE/NEWOBJ) of a global it knows is evaluated
//! here (`_codecs.encode` for Python 3 bytes at protocol 2, `bytes`/`bytearray`, `numpy.dtype`,
//! `numpy[._]core.multiarray._reconstruct` + BUILD, `numpy[._]core.numeric._frombuffer` for
//! protocol 5, `numpy[._]core.multiarray.scalar`); any other call yields an opaque
//! [`Value::Object`], which is an error only if the caller needs its value. Python 2 `str` (as in
//! the official files) reads as bytes, like Python 3's `pickle.load(f, encoding='bytes')`.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// At most this many containers (lists, tuples, dicts) inside one another. CIFAR's pickles
/// nest three deep; the limit keeps every recursive walk (drop included) far from the end of
/// the stack.
pub const MAX_DEPTH: usize = 1000;

/// Bytes that evaluating calls may copy beyond the pickle's own length (latin-1 / UTF-8
/// encodes of a str already read), so that a small file cannot ask for gigabytes by encoding
/// one large str many times.
const COPY_SLACK: usize = 1 << 20;

/// A pickle that cannot be read: where (the byte offset of the opcode) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {message}")]
pub struct PickleError {
    pub offset: usize,
    pub message: String,
}

/// A decoded pickle value. Containers are shared so memo references see later mutations.
/// There are no cycles and at most [`MAX_DEPTH`] levels: a list or dict cannot change once
/// it is inside another container, nor be put inside itself (see [`load`]).
#[derive(Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(Rc<Vec<u8>>),
    Str(Rc<str>),
    List(Rc<Container<Vec<Value>>>),
    Tuple(Rc<Tuple>),
    Dict(Rc<Container<Vec<(Value, Value)>>>),
    Global(Rc<(String, String)>),
    Dtype(Rc<RefCell<Dtype>>),
    Array(Rc<RefCell<Array>>),
    /// The result of calling a global this reader does not evaluate (`module.name`).
    Object(Rc<str>),
}

/// A list's or dict's entries, its nesting depth so far, and whether it is inside another
/// container yet (after which it may not change).
pub struct Container<T> {
    items: RefCell<T>,
    depth: Cell<usize>,
    nested: Cell<bool>,
}

/// A tuple's items and nesting depth (fixed: tuples never change).
pub struct Tuple {
    items: Vec<Value>,
    depth: usize,
}

/// Shallow on purpose: a value can share sub-values many times over, so printing it whole
/// could be exponentially long.
impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.kind())
    }
}

/// A numpy dtype of fixed-size numbers: kind (`b`, `i`, `u`, `f`), item size and byte order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dtype {
    pub kind: char,
    pub size: usize,
    pub little_endian: bool,
}

/// A numpy array: C- or Fortran-ordered raw bytes of `dtype` items with `shape`. An array this
/// reader cannot represent (object or string dtype, size mismatch) keeps the reason in `error`,
/// so a file still loads when only its other entries are needed.
#[derive(Debug, Clone)]
pub struct Array {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub fortran: bool,
    pub data: Rc<Vec<u8>>,
    pub error: Option<String>,
}

impl Dtype {
    /// Parses numpy's type strings as pickled (`u1`, `i8`, `<i8`, `|b1`, `f4`, ...); any other
    /// type (`O8`, `U10`, ...) gets `size` 0, which marks arrays of it unsupported.
    fn parse(spec: &str) -> Self {
        let (little_endian, rest) = match spec.as_bytes().first() {
            Some(b'>') => (false, &spec[1..]),
            Some(b'<' | b'|' | b'=') => (true, &spec[1..]),
            _ => (true, spec),
        };
        let mut chars = rest.chars();
        let kind = chars.next().unwrap_or('?');
        let size: usize = chars.as_str().parse().unwrap_or(0);
        let size = match (kind, size) {
            ('b', 1) | ('i' | 'u', 1 | 2 | 4 | 8) | ('f', 4 | 8) => size,
            _ => 0,
        };
        Self {
            kind,
            size,
            little_endian,
        }
    }

    /// One item as an integer (bool and integer kinds only).
    fn int_at(&self, bytes: &[u8]) -> Option<i64> {
        let mut buf = [0u8; 8];
        let n = self.size;
        if n == 0 || bytes.len() != n || self.kind == 'f' {
            return None;
        }
        if self.little_endian {
            buf[..n].copy_from_slice(bytes);
        } else {
            for (i, b) in bytes.iter().rev().enumerate() {
                buf[i] = *b;
            }
        }
        let raw = u64::from_le_bytes(buf);
        Some(if self.kind == 'i' && n < 8 {
            let shift = 64 - 8 * n as u32;
            ((raw << shift) as i64) >> shift
        } else {
            raw as i64
        })
    }
}

impl Array {
    /// The items as integers, in C order of a 1-D array (bool/integer dtypes).
    pub fn to_ints(&self) -> Result<Vec<i64>, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.shape.len() != 1 {
            return Err(format!("expected a 1-D array, got shape {:?}", self.shape));
        }
        self.data
            .chunks_exact(self.dtype.size)
            .map(|item| {
                self.dtype
                    .int_at(item)
                    .ok_or_else(|| format!("expected an integer array, got {:?}", self.dtype))
            })
            .collect()
    }
}

impl Value {
    /// Looks up a dict entry by a str or bytes key.
    pub fn get(&self, key: &str) -> Option<Value> {
        let Value::Dict(d) = self else { return None };
        let entries = d.items.borrow();
        entries.iter().find_map(|(k, v)| {
            let hit = match k {
                Value::Str(s) => &**s == key,
                Value::Bytes(b) => b.as_slice() == key.as_bytes(),
                _ => false,
            };
            hit.then(|| v.clone())
        })
    }

    /// The items of a list or tuple (shallow copies), or `None` for anything else.
    fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::List(l) => Some(l.items.borrow().clone()),
            Value::Tuple(t) => Some(t.items.clone()),
            _ => None,
        }
    }

    /// A list, tuple or 1-D integer array as integers.
    pub fn to_ints(&self) -> Result<Vec<i64>, String> {
        if let Value::Array(a) = self {
            return a.borrow().to_ints();
        }
        let items = self
            .items()
            .ok_or_else(|| format!("expected a list of ints, got {}", self.kind()))?;
        items
            .iter()
            .map(|v| match v {
                Value::Int(i) => Ok(*i),
                Value::Bool(b) => Ok(i64::from(*b)),
                other => Err(format!("expected an int, got {}", other.kind())),
            })
            .collect()
    }

    /// A list or tuple of str/bytes as strings (bytes decoded as UTF-8, lossily).
    pub fn to_strings(&self) -> Result<Vec<String>, String> {
        let items = self
            .items()
            .ok_or_else(|| format!("expected a list of strings, got {}", self.kind()))?;
        items
            .iter()
            .map(|v| match v {
                Value::Str(s) => Ok(s.to_string()),
                Value::Bytes(b) => Ok(String::from_utf8_lossy(b).into_owned()),
                other => Err(format!("expected a string, got {}", other.kind())),
            })
            .collect()
    }

    /// A short description for error messages (never looks inside containers).
    pub fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "a bool".into(),
            Value::Int(_) => "an int".into(),
            Value::Float(f) => format!("the float {f}"),
            Value::Bytes(_) => "bytes".into(),
            Value::Str(_) => "a str".into(),
            Value::List(_) => "a list".into(),
            Value::Tuple(_) => "a tuple".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Global(g) => format!("the global {}.{}", g.0, g.1),
            Value::Dtype(_) => "a numpy dtype".into(),
            Value::Array(_) => "a numpy array".into(),
            Value::Object(name) => format!("an unsupported {name} object"),
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.to_string()),
            Value::Bytes(b) => std::str::from_utf8(b).ok().map(str::to_owned),
            _ => None,
        }
    }

    /// Containers nested inside this value, itself included (0 for scalars).
    fn depth(&self) -> usize {
        match self {
            Value::List(l) => l.depth.get(),
            Value::Dict(d) => d.depth.get(),
            Value::Tuple(t) => t.depth,
            _ => 0,
        }
    }

    /// Marks a list or dict as inside another container: from now on it may not change.
    fn nest(&self) {
        match self {
            Value::List(l) => l.nested.set(true),
            Value::Dict(d) => d.nested.set(true),
            _ => {}
        }
    }

    /// Whether `self` and `other` are the same list or dict.
    fn same_container(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::List(a), Value::List(b)) => Rc::ptr_eq(a, b),
            (Value::Dict(a), Value::Dict(b)) => Rc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl<T: Default> Container<T> {
    fn new() -> Self {
        Container {
            items: RefCell::new(T::default()),
            depth: Cell::new(1),
            nested: Cell::new(false),
        }
    }
}

fn new_list(items: Vec<Value>) -> Result<Value, String> {
    let list = Value::List(Rc::new(Container::new()));
    append(&list, items)?;
    Ok(list)
}

fn new_dict() -> Value {
    Value::Dict(Rc::new(Container::new()))
}

/// 1 + the deepest of `items`, checked against [`MAX_DEPTH`]; nests every item.
fn nest_items<'a>(items: impl IntoIterator<Item = &'a Value>) -> Result<usize, String> {
    let mut deepest = 0;
    for item in items {
        item.nest();
        deepest = deepest.max(item.depth());
    }
    if deepest >= MAX_DEPTH {
        return Err(format!(
            "containers nest more than {MAX_DEPTH} deep; a dataset pickle nests a few levels"
        ));
    }
    Ok(deepest + 1)
}

fn new_tuple(items: Vec<Value>) -> Result<Value, String> {
    let depth = nest_items(&items)?;
    Ok(Value::Tuple(Rc::new(Tuple { items, depth })))
}

/// APPEND(S): adds `items` to the list `target`.
fn append(target: &Value, items: Vec<Value>) -> Result<(), String> {
    let Value::List(l) = target else {
        return Err(format!("APPEND to {}", target.kind()));
    };
    admit(target, &l.depth, &l.nested, &items)?;
    l.items.borrow_mut().extend(items);
    Ok(())
}

/// SETITEM(S): adds `items`, as key, value pairs, to the dict `target`.
fn set_items(target: &Value, items: Vec<Value>) -> Result<(), String> {
    let Value::Dict(d) = target else {
        return Err(format!("SETITEM on {}", target.kind()));
    };
    if !items.len().is_multiple_of(2) {
        return Err("SETITEMS with an odd number of items".into());
    }
    admit(target, &d.depth, &d.nested, &items)?;
    let mut d = d.items.borrow_mut();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        d.push((k, v));
    }
    Ok(())
}

/// Whether `items` may go into `target` (a list or dict with `depth` and `nested`), which
/// must not be inside another container yet nor be one of `items`: either would make a cycle
/// or change a depth already counted. Updates `depth` and nests the items.
fn admit(
    target: &Value,
    depth: &Cell<usize>,
    nested: &Cell<bool>,
    items: &[Value],
) -> Result<(), String> {
    let recursive = "(a recursive structure), which this reader does not support";
    if nested.get() {
        return Err(format!(
            "changes {} already inside another container {recursive}",
            target.kind()
        ));
    }
    if items.iter().any(|i| i.same_container(target)) {
        return Err(format!("puts {} inside itself {recursive}", target.kind()));
    }
    depth.set(depth.get().max(nest_items(items)?));
    Ok(())
}

/// Byte cursor over the pickle; every read checks bounds.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| {
            format!(
                "truncated: needs {n} bytes at offset {} but the file has {}",
                self.pos,
                self.buf.len()
            )
        })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<usize, String> {
        Ok(u32::from_le_bytes(self.arr()?) as usize)
    }

    fn u64(&mut self) -> Result<usize, String> {
        usize::try_from(u64::from_le_bytes(self.arr()?)).map_err(|e| e.to_string())
    }

    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.buf[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated: unterminated text argument")?;
        let line = self.take(n + 1)?;
        std::str::from_utf8(&line[..n]).map_err(|_| "text argument is not UTF-8".to_string())
    }
}

fn utf8(bytes: &[u8]) -> Result<Value, String> {
    std::str::from_utf8(bytes)
        .map(|s| Value::Str(s.into()))
        .map_err(|_| "a str is not valid UTF-8".to_string())
}

/// Little-endian two's-complement integer (LONG1/LONG4), up to 8 bytes.
fn long(bytes: &[u8]) -> Result<Value, String> {
    if bytes.len() > 8 {
        return Err(format!(
            "integer of {} bytes does not fit 64 bits",
            bytes.len()
        ));
    }
    if bytes.is_empty() {
        return Ok(Value::Int(0));
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let mut buf = if negative { [0xff; 8] } else { [0; 8] };
    buf[..bytes.len()].copy_from_slice(bytes);
    Ok(Value::Int(i64::from_le_bytes(buf)))
}

/// Decodes Python's raw-unicode-escape (latin-1 bytes with `\uXXXX` / `\UXXXXXXXX`).
fn raw_unicode_escape(s: &[u8]) -> Result<Value, String> {
    let mut out = String::new();
    let mut i = 0;
    while i < s.len() {
        let width = match (s[i], s.get(i + 1)) {
            (b'\\', Some(b'u')) => 4,
            (b'\\', Some(b'U')) => 8,
            _ => 0,
        };
        if width > 0 {
            let hex = s
                .get(i + 2..i + 2 + width)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
                .ok_or("bad \\u escape in a text str")?;
            out.push(hex);
            i += 2 + width;
        } else {
            out.push(char::from(s[i]));
            i += 1;
        }
    }
    Ok(Value::Str(out.into()))
}

/// Encodes a str whose characters are all below U+0100 as latin-1 (one byte per character).
/// Works on the UTF-8 bytes: U+0080..U+00FF are the two-byte sequences led by 0xC2 or 0xC3.
fn latin1(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    if bytes.is_ascii() {
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b < 0x80 {
            out.push(b);
            i += 1;
        } else if b == 0xc2 || b == 0xc3 {
            let next = bytes.get(i + 1).copied().unwrap_or(0);
            out.push(((b & 0x03) << 6) | (next & 0x3f));
            i += 2;
        } else {
            return Err(format!(
                "a latin-1 str has a character above U+00FF at byte {i}"
            ));
        }
    }
    Ok(out)
}

fn is_numpy_core(module: &str, sub: &str) -> bool {
    module == format!("numpy.core.{sub}") || module == format!("numpy._core.{sub}")
}

fn shape_of(v: &Value) -> Result<Vec<usize>, String> {
    let dims = match v {
        Value::Int(_) => vec![v.clone()],
        other => other
            .items()
            .ok_or_else(|| format!("numpy shape is {}", other.kind()))?,
    };
    dims.iter()
        .map(|d| match d {
            Value::Int(i) => usize::try_from(*i).map_err(|_| format!("negative dimension {i}")),
            other => Err(format!("numpy dimension is {}", other.kind())),
        })
        .collect()
}

fn dtype_of(v: &Value) -> Result<Dtype, String> {
    match v {
        Value::Dtype(d) => Ok(d.borrow().clone()),
        other => Err(format!("expected a numpy dtype, got {}", other.kind())),
    }
}

/// An array, with `error` set when the dtype is unsupported or the bytes do not fit the shape
/// (the product of the dimensions is checked, so no shape allocates anything).
fn make_array(shape: Vec<usize>, dtype: Dtype, fortran: bool, data: Rc<Vec<u8>>) -> Array {
    let want = shape
        .iter()
        .try_fold(dtype.size, |acc, &d| acc.checked_mul(d));
    let error = if dtype.size == 0 {
        Some(format!(
            "numpy arrays of dtype kind {:?} are not supported",
            dtype.kind
        ))
    } else if want != Some(data.len()) {
        Some(format!(
            "numpy array of shape {shape:?} and item size {} does not match its {} bytes",
            dtype.size,
            data.len()
        ))
    } else {
        None
    };
    Array {
        shape,
        dtype,
        fortran,
        data,
        error,
    }
}

fn arg(args: &[Value], i: usize, what: &str) -> Result<Value, String> {
    args.get(i)
        .cloned()
        .ok_or_else(|| format!("{what}: missing argument {i}"))
}

/// What evaluating calls may still copy (see [`COPY_SLACK`]).
struct CopyBudget(usize);

impl CopyBudget {
    /// `bytes`, counted against the budget.
    fn copy(&mut self, bytes: Vec<u8>) -> Result<Rc<Vec<u8>>, String> {
        self.0 = self.0.checked_sub(bytes.len()).ok_or_else(|| {
            "encodes more text than the file holds (the same str encoded over and over); a \
             dataset pickle encodes each str once"
                .to_string()
        })?;
        Ok(Rc::new(bytes))
    }
}

/// Evaluates `callable(*args)` for the globals listed in the module doc.
fn call(callable: &Value, args: &[Value], budget: &mut CopyBudget) -> Result<Value, String> {
    let Value::Global(g) = callable else {
        return Ok(Value::Object(
            format!("<call of {}>", callable.kind()).into(),
        ));
    };
    let (module, name) = (g.0.as_str(), g.1.as_str());
    let builtin = module == "builtins" || module == "__builtin__";
    match (module, name) {
        ("_codecs", "encode") => {
            let text = arg(args, 0, "_codecs.encode")?;
            let Value::Str(s) = &text else {
                return Err(format!("_codecs.encode of {}", text.kind()));
            };
            let enc = args
                .get(1)
                .and_then(Value::text)
                .unwrap_or_else(|| "utf-8".into());
            let bytes = match enc.to_ascii_lowercase().replace('_', "-").as_str() {
                "latin1" | "latin-1" | "iso-8859-1" => latin1(s)?,
                "utf-8" | "utf8" => s.as_bytes().to_vec(),
                other => {
                    return Err(format!(
                        "_codecs.encode with unsupported encoding {other:?}"
                    ))
                }
            };
            Ok(Value::Bytes(budget.copy(bytes)?))
        }
        (_, "bytes" | "bytearray") if builtin => match args.first() {
            None => Ok(Value::Bytes(Rc::new(Vec::new()))),
            Some(Value::Bytes(b)) => Ok(Value::Bytes(b.clone())),
            Some(Value::Str(s)) => Ok(Value::Bytes(budget.copy(latin1(s)?)?)),
            Some(other) => Err(format!("{name}() of {}", other.kind())),
        },
        ("numpy", "dtype") => {
            let spec = arg(args, 0, "numpy.dtype")?;
            let spec = spec
                .text()
                .ok_or_else(|| format!("numpy.dtype of {}", spec.kind()))?;
            Ok(Value::Dtype(Rc::new(RefCell::new(Dtype::parse(&spec)))))
        }
        (m, "_reconstruct") if is_numpy_core(m, "multiarray") => {
            let empty = make_array(vec![0], Dtype::parse("u1"), false, Rc::new(Vec::new()));
            Ok(Value::Array(Rc::new(RefCell::new(empty))))
        }
        (m, "_frombuffer") if is_numpy_core(m, "numeric") => {
            let buf = match arg(args, 0, "_frombuffer")? {
                Value::Bytes(b) => b,
                other => return Err(format!("_frombuffer of {}", other.kind())),
            };
            let dtype = dtype_of(&arg(args, 1, "_frombuffer")?)?;
            let shape = shape_of(&arg(args, 2, "_frombuffer")?)?;
            let fortran = args.get(3).and_then(Value::text).as_deref() == Some("F");
            let array = make_array(shape, dtype, fortran, buf);
            Ok(Value::Array(Rc::new(RefCell::new(array))))
        }
        (m, "scalar") if is_numpy_core(m, "multiarray") => {
            let dtype = dtype_of(&arg(args, 0, "numpy scalar")?)?;
            let bytes = match arg(args, 1, "numpy scalar")? {
                Value::Bytes(b) => b,
                other => return Err(format!("numpy scalar of {}", other.kind())),
            };
            if dtype.kind == 'f' {
                let f = match bytes.len() {
                    4 => f32::from_le_bytes(bytes[..].try_into().unwrap_or_default()) as f64,
                    8 => f64::from_le_bytes(bytes[..].try_into().unwrap_or_default()),
                    n => return Err(format!("numpy float scalar of {n} bytes")),
                };
                return Ok(Value::Float(f));
            }
            dtype
                .int_at(&bytes)
                .map(Value::Int)
                .ok_or_else(|| format!("numpy scalar of dtype {dtype:?}"))
        }
        _ => Ok(Value::Object(format!("{module}.{name}").into())),
    }
}

/// Applies BUILD's `state` to `target` (numpy dtypes and arrays; ignored for other objects).
fn build(target: &Value, state: &Value, budget: &mut CopyBudget) -> Result<(), String> {
    match target {
        Value::Dtype(d) => {
            if let Value::Tuple(t) = state {
                match t.items.get(1).and_then(Value::text).as_deref() {
                    Some(">") => d.borrow_mut().little_endian = false,
                    Some("<" | "|" | "=") => d.borrow_mut().little_endian = true,
                    _ => {}
                }
            }
            Ok(())
        }
        Value::Array(a) => {
            let Value::Tuple(t) = state else {
                return Err(format!("numpy array state is {}", state.kind()));
            };
            // (version, shape, dtype, is_fortran, rawdata), or the version-less 4-tuple.
            let s: &[Value] = match t.items.len() {
                5 => &t.items[1..],
                4 => &t.items[..],
                n => return Err(format!("numpy array state has {n} items, expected 4 or 5")),
            };
            let shape = shape_of(&s[0])?;
            let dtype = dtype_of(&s[1])?;
            let fortran = matches!(s[2], Value::Bool(true) | Value::Int(1));
            let array = match &s[3] {
                Value::Bytes(b) => make_array(shape, dtype, fortran, b.clone()),
                Value::Str(text) => make_array(shape, dtype, fortran, budget.copy(latin1(text)?)?),
                other => {
                    let mut array = make_array(shape, dtype, fortran, Rc::new(Vec::new()));
                    array.error = Some(format!(
                        "numpy array data is {} (object arrays are not supported)",
                        other.kind()
                    ));
                    array
                }
            };
            *a.borrow_mut() = array;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Runs the pickle in `bytes` and returns the value STOP leaves on the stack. Never panics and
/// allocates at most a small multiple of `bytes.len()`: every length is checked against the
/// bytes left, containers nest at most [`MAX_DEPTH`] deep and never in a cycle (a pickle of a
/// recursive structure is an error), and calls copy at most the file's length plus 1 MiB.
pub fn load(bytes: &[u8]) -> Result<Value, PickleError> {
    let mut m = Machine {
        c: Cursor { buf: bytes, pos: 0 },
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        budget: CopyBudget(bytes.len().saturating_add(COPY_SLACK)),
    };
    loop {
        let offset = m.c.pos;
        let step = m.c.u8().and_then(|op| m.step(op));
        match step {
            Ok(Step::Next) => {}
            Ok(Step::Push(v)) => m.stack.push(v),
            Ok(Step::Stop(v)) => return Ok(v),
            Err(message) => return Err(PickleError { offset, message }),
        }
    }
}

/// The pickle virtual machine: input, stack, marks, memo.
struct Machine<'a> {
    c: Cursor<'a>,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<usize, Value>,
    budget: CopyBudget,
}

/// What one opcode did.
enum Step {
    Next,
    Push(Value),
    Stop(Value),
}

fn text_int(s: &str) -> Result<i64, String> {
    s.trim_end_matches('L')
        .parse()
        .map_err(|_| format!("bad text integer {s:?}"))
}

impl Machine<'_> {
    fn pop(&mut self) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn top(&self) -> Result<&Value, String> {
        self.stack
            .last()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let m = self.marks.pop().ok_or("no MARK to pop to")?;
        if m > self.stack.len() {
            return Err("MARK beyond the stack".into());
        }
        Ok(self.stack.split_off(m))
    }

    /// The next `n` input bytes as a bytes value (`n` is checked against the input first).
    fn bytes(&mut self, n: usize) -> Result<Value, String> {
        Ok(Value::Bytes(Rc::new(self.c.take(n)?.to_vec())))
    }

    /// Executes opcode `op` (its arguments follow in the input).
    fn step(&mut self, op: u8) -> Result<Step, String> {
        let c = &mut self.c;
        let value = match op {
            0x80 => {
                c.u8()?; // PROTO
                return Ok(Step::Next);
            }
            0x95 => {
                c.take(8)?; // FRAME
                return Ok(Step::Next);
            }
            b'.' => return self.pop().map(Step::Stop),
            b'(' => {
                self.marks.push(self.stack.len());
                return Ok(Step::Next);
            }
            b'0' => {
                self.pop()?;
                return Ok(Step::Next);
            }
            b'1' => {
                self.pop_mark()?;
                return Ok(Step::Next);
            }
            b'2' => self.top()?.clone(),
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            b'J' => Value::Int(i64::from(i32::from_le_bytes(c.arr()?))),
            b'K' => Value::Int(i64::from(c.u8()?)),
            b'M' => Value::Int(i64::from(u16::from_le_bytes(c.arr()?))),
            0x8a => {
                let n = usize::from(c.u8()?);
                long(c.take(n)?)?
            }
            0x8b => {
                let n = c.u32()?;
                long(c.take(n)?)?
            }
            b'I' => match c.line()? {
                "00" => Value::Bool(false),
                "01" => Value::Bool(true),
                s => Value::Int(text_int(s)?),
            },
            b'L' => Value::Int(text_int(c.line()?)?),
            b'G' => Value::Float(f64::from_be_bytes(c.arr()?)),
            b'F' => Value::Float(
                c.line()?
                    .parse()
                    .map_err(|_| "bad text float".to_string())?,
            ),
            b'T' => {
                let n = i32::from_le_bytes(c.arr()?);
                let n = usize::try_from(n).map_err(|_| "negative string length".to_string())?;
                self.bytes(n)?
            }
            b'U' | b'C' => {
                let n = usize::from(c.u8()?);
                self.bytes(n)?
            }
            b'B' => {
                let n = c.u32()?;
                self.bytes(n)?
            }
            0x8e | 0x96 => {
                let n = c.u64()?;
                self.bytes(n)?
            }
            b'X' => {
                let n = c.u32()?;
                utf8(c.take(n)?)?
            }
            0x8c => {
                let n = usize::from(c.u8()?);
                utf8(c.take(n)?)?
            }
            0x8d => {
                let n = c.u64()?;
                utf8(c.take(n)?)?
            }
            b'V' => raw_unicode_escape(c.line()?.as_bytes())?,
            b']' | 0x8f => new_list(Vec::new())?,
            b'l' | 0x91 => new_list(self.pop_mark()?)?,
            b'a' => {
                let item = self.pop()?;
                append(self.top()?, vec![item])?;
                return Ok(Step::Next);
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                append(self.top()?, items)?;
                return Ok(Step::Next);
            }
            b')' => new_tuple(Vec::new())?,
            b't' => new_tuple(self.pop_mark()?)?,
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let Some(start) = self.stack.len().checked_sub(n) else {
                    return Err("stack underflow".into());
                };
                new_tuple(self.stack.split_off(start))?
            }
            b'}' => new_dict(),
            b'd' => {
                let items = self.pop_mark()?;
                let dict = new_dict();
                set_items(&dict, items)?;
                dict
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                set_items(self.top()?, vec![k, v])?;
                return Ok(Step::Next);
            }
            b'u' => {
                let items = self.pop_mark()?;
                set_items(self.top()?, items)?;
                return Ok(Step::Next);
            }
            b'c' => {
                let module = c.line()?.to_string();
                let name = c.line()?.to_string();
                Value::Global(Rc::new((module, name)))
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module.text(), name.text()) {
                    (Some(m), Some(n)) => Value::Global(Rc::new((m, n))),
                    _ => return Err("STACK_GLOBAL of non-strings".into()),
                }
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let Value::Tuple(args) = &args else {
                    return Err(format!("REDUCE arguments are {}", args.kind()));
                };
                call(&callable, &args.items, &mut self.budget)?
            }
            0x81 | 0x92 => {
                if op == 0x92 {
                    self.pop()?; // kwargs
                }
                self.pop()?; // args
                match self.pop()? {
                    Value::Global(g) => Value::Object(format!("{}.{}", g.0, g.1).into()),
                    other => Value::Object(other.kind().into()),
                }
            }
            b'b' => {
                let state = self.pop()?;
                let target = self.stack.last().ok_or("stack underflow")?;
                build(target, &state, &mut self.budget)?;
                return Ok(Step::Next);
            }
            b'p' | b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'p' => usize::try_from(text_int(c.line()?)?).map_err(|e| e.to_string())?,
                    b'q' => usize::from(c.u8()?),
                    b'r' => c.u32()?,
                    _ => self.memo.len(),
                };
                let value = self.top()?.clone();
                self.memo.insert(key, value);
                return Ok(Step::Next);
            }
            b'g' | b'h' | b'j' => {
                let key = match op {
                    b'g' => usize::try_from(text_int(c.line()?)?).map_err(|e| e.to_string())?,
                    b'h' => usize::from(c.u8()?),
                    _ => c.u32()?,
                };
                self.memo
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| format!("memo key {key} used before it was set"))?
            }
            0x97 | 0x98 => {
                return Err(
                    "out-of-band buffers (protocol 5 with a buffer_callback) are not \
                            supported; re-save the file with plain pickle.dump"
                        .into(),
                )
            }
            other => return Err(format!("unsupported pickle opcode 0x{other:02x}")),
        };
        Ok(Step::Push(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pickle_reads_python2_style_numpy_dict() {
        // {'data': array([[1, 2, 3]], dtype=uint8), 'fine_labels': [7]} as Python 2's cPickle
        // writes it (protocol 2, str as SHORT_BINSTRING/BINSTRING, GLOBAL numpy.core).
        let parts: [&[u8]; 8] = [
            b"\x80\x02}q\x01(U\x04dataq\x02",
            b"cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04",
            b"K\x00\x85U\x01b\x87Rq\x05(K\x01K\x01K\x03\x86",
            b"cnumpy\ndtype\nq\x06U\x02u1K\x00K\x01\x87Rq\x07",
            b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
            b"\x89T\x03\x00\x00\x00\x01\x02\x03tb",
            b"U\x0bfine_labelsq\x08]q\x09K\x07a",
            b"u.",
        ];
        let p = parts.concat();
        let v = load(&p).unwrap();
        let Some(Value::Array(a)) = v.get("data") else {
            panic!("no array")
        };
        let a = a.borrow();
        assert_eq!(a.shape, vec![1, 3]);
        assert_eq!(a.data.as_slice(), &[1, 2, 3]);
        assert_eq!(v.get("fine_labels").unwrap().to_ints().unwrap(), vec![7]);
    }

    #[test]
    fn pickle_errors_on_truncation_and_unknown_opcodes() {
        assert!(load(b"\x80\x02}q\x01(U\x04da")
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        let err = load(b"\x80\x02\xff").unwrap_err();
        assert_eq!(err.offset, 2);
        assert_eq!(err.to_string(), "at byte 2: unsupported pickle opcode 0xff");
        assert!(load(b"").is_err());
    }

    #[test]
    fn long1_and_negative_ints() {
        let v = load(b"\x8a\x05\x00\x00\x00\x00\x01.").unwrap();
        assert!(matches!(v, Value::Int(0x1_0000_0000)));
        let v = load(b"J\xfe\xff\xff\xff.").unwrap();
        assert!(matches!(v, Value::Int(-2)));
        let v = load(b"\x8a\x01\xff.").unwrap();
        assert!(matches!(v, Value::Int(-1)));
    }

    /// `n` opcodes `open` (each making a container) then `n - 1` `close` (each nesting the top
    /// one in the one below): containers nested `n` deep, as a few bytes per level.
    fn nested(open: &[u8], close: &[u8], n: usize) -> Vec<u8> {
        let mut p = open.repeat(n);
        p.extend(close.repeat(n - 1));
        p.push(b'.');
        p
    }

    #[test]
    fn deep_nesting_is_an_error_naming_the_offset_not_a_stack_overflow() {
        // 300,000 lists in one another (900 KB): dropping or printing them recursively would
        // overflow the stack.
        let err = load(&nested(b"]", b"a", 300_000)).unwrap_err();
        assert_eq!(err.offset, 300_000 + MAX_DEPTH - 1, "{err}");
        assert!(
            err.to_string().contains("nest more than 1000 deep"),
            "{err}"
        );
        // Tuples (TUPLE1 of TUPLE1 of ...) and dicts (SETITEM under a key) alike.
        let mut tuples = b")".to_vec();
        tuples.extend([0x85].repeat(300_000));
        tuples.push(b'.');
        assert!(load(&tuples).is_err());
        let err = load(&nested(b"K\x00}", b"s", 300_000)).unwrap_err();
        assert!(err.to_string().contains("nest more"), "{err}");
        // Exactly the limit loads.
        let v = load(&nested(b"]", b"a", MAX_DEPTH)).unwrap();
        assert_eq!(v.depth(), MAX_DEPTH);
    }

    #[test]
    fn recursive_structures_are_refused_not_followed() {
        // l = []; l.append(l)  (what pickle.dumps writes for it)
        let err = load(b"]q\x00h\x00a.").unwrap_err();
        assert!(err.to_string().contains("inside itself"), "{err}");
        // a = []; b = [a]; a.append(b): a changes after it went into b.
        let err = load(b"]q\x00]q\x01h\x00ah\x00h\x01a.").unwrap_err();
        assert!(err.to_string().contains("already inside"), "{err}");
        assert_eq!(err.offset, 13);
        // d = {}; d['d'] = d
        assert!(load(b"}q\x00U\x01dh\x00s.").is_err());
        // Sharing without a cycle is fine: [x, x] with x = [1].
        let v = load(b"(]q\x00K\x01ah\x00l.").unwrap();
        assert_eq!(v.items().unwrap().len(), 2);
        assert_eq!(v.depth(), 2);
    }

    #[test]
    fn encoding_one_str_over_and_over_runs_out_of_budget() {
        // A 100 KB str, then _codecs.encode(s, 'latin1') 20 times, each result kept on the
        // stack: 2 MB of copies from a 100 KB file.
        let mut p = b"c_codecs\nencode\nq\x00X\xa0\x86\x01\x00".to_vec();
        p.extend([b'a'].repeat(100_000));
        p.extend(b"q\x01U\x06latin1q\x02");
        for _ in 0..20 {
            p.extend(b"h\x00h\x01h\x02\x86R");
        }
        p.push(b'.');
        let err = load(&p).unwrap_err();
        assert!(err.to_string().contains("encodes more text"), "{err}");
        // Once is fine.
        let once = [&p[..p.len() - 1 - 19 * 8], b"."].concat();
        assert!(matches!(load(&once), Ok(Value::Bytes(b)) if b.len() == 100_000));
    }

    #[test]
    fn lengths_past_the_end_and_huge_shapes_are_errors() {
        // BINBYTES8 claiming 2^62 bytes, LONG4 claiming 4 GB, BINUNICODE8 past the end.
        for p in [
            &b"\x8e\x00\x00\x00\x00\x00\x00\x00\x40."[..],
            b"\x8b\xff\xff\xff\xff.",
            b"\x8d\x05\x00\x00\x00\x00\x00\x00\x00ab.",
        ] {
            assert!(load(p).unwrap_err().to_string().contains("truncated"));
        }
        // A shape whose product overflows is an array error, not an allocation.
        let shape = vec![usize::MAX / 2, 4];
        let a = make_array(shape, Dtype::parse("u1"), false, Rc::new(vec![0; 4]));
        assert!(a.error.unwrap().contains("does not match"));
        // LONG_BINPUT with the largest index does not allocate a memo of that size.
        assert!(matches!(
            load(b"K\x07r\xff\xff\xff\xff0j\xff\xff\xff\xff."),
            Ok(Value::Int(7))
        ));
    }
}
