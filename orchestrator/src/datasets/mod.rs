//! Dataset sources (real on-disk formats and the embedded synthetic benchmark): listing a
//! split's examples, fingerprinting a source, decoding and resizing images.
