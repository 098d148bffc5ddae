//! The official dataset archives (URLs and checksums as torchvision pins them) and where each
//! unpacks to. Owns only this table and URL rewriting; it must not download.
use super::Checksum;
use crate::datasets::Format;
use std::path::Path;

/// Base URL replacing the official host of every dataset archive (a lab cache, a test server).
pub const DATA_MIRROR_ENV: &str = "VTAB_ORCH_DATA_MIRROR";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    TarGz,
    Zip,
}

/// One downloadable dataset archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    pub url: &'static str,
    pub file_name: &'static str,
    pub kind: ArchiveKind,
    pub md5: &'static str,
    /// The folder inside the archive that a reader's `root` may name.
    pub inner: &'static str,
}

impl Archive {
    pub fn checksum(&self) -> Checksum {
        Checksum::Md5(self.md5.to_string())
    }
}

// torchvision 0.26 torchvision/datasets/cifar.py (CIFAR100.url / tgz_md5).
const CIFAR100_PYTHON: Archive = Archive {
    url: "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    file_name: "cifar-100-python.tar.gz",
    kind: ArchiveKind::TarGz,
    md5: "eb9058c3a382ffc7106e4002c42a8d85",
    inner: "cifar-100-python",
};
// torchvision pins only the python version. The binary version's md5 is the one recorded in
// github.com/datasets-mila/datasets--cifar100 (file `md5sums`), which lists the python
// archive's md5 identically to torchvision.
const CIFAR100_BINARY: Archive = Archive {
    url: "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
    file_name: "cifar-100-binary.tar.gz",
    kind: ArchiveKind::TarGz,
    md5: "03b5dce01913d631647c71ecec9e9cb8",
    inner: "cifar-100-binary",
};
// torchvision 0.26 torchvision/datasets/eurosat.py (EuroSAT.download): the torchgeo copy on the
// Hugging Face hub of the original madm.dfki.de EuroSAT.zip (same md5); unpacks to 2750/.
const EUROSAT: Archive = Archive {
    url: "https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
    file_name: "EuroSAT.zip",
    kind: ArchiveKind::Zip,
    md5: "c8fa014336c82ac7804f0398fcb19387",
    inner: "2750",
};
// torchvision 0.26 torchvision/datasets/dtd.py (DTD._URL / _MD5); unpacks to dtd/.
const DTD: Archive = Archive {
    url: "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
    file_name: "dtd-r1.0.1.tar.gz",
    kind: ArchiveKind::TarGz,
    md5: "fff73e5086ae6bdbea199a49dfb8a4c1",
    inner: "dtd",
};

/// The archive that provides a dataset of `format` whose root is `root`, if one exists. CIFAR-100
/// is the python version unless the root's folder is named `cifar-100-binary`.
pub fn archive_for(format: &Format, root: &Path) -> Option<Archive> {
    match format {
        Format::Cifar100 => Some(
            if root.file_name().is_some_and(|n| n == "cifar-100-binary") {
                CIFAR100_BINARY
            } else {
                CIFAR100_PYTHON
            },
        ),
        Format::Eurosat => Some(EUROSAT),
        Format::Dtd => Some(DTD),
        Format::Vtab1k | Format::Imagefolder | Format::Csv => None,
    }
}

/// `url` with its scheme and host replaced by `mirror` (path kept), or `url` itself.
pub fn mirrored(url: &str, mirror: Option<&str>) -> String {
    let Some(base) = mirror.filter(|m| !m.is_empty()) else {
        return url.to_string();
    };
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    format!("{}{path}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_replaces_the_host_and_keeps_the_path() {
        let u = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz";
        assert_eq!(mirrored(u, None), u);
        assert_eq!(
            mirrored(u, Some("http://127.0.0.1:8000/cache/")),
            "http://127.0.0.1:8000/cache/~kriz/cifar-100-python.tar.gz"
        );
    }

    #[test]
    fn cifar_binary_only_when_the_root_names_it() {
        let f = Format::Cifar100;
        assert_eq!(
            archive_for(&f, Path::new("d/cifar-100-binary"))
                .unwrap()
                .inner,
            "cifar-100-binary"
        );
        assert_eq!(
            archive_for(&f, Path::new("d/cifar")).unwrap().inner,
            "cifar-100-python"
        );
        assert!(archive_for(&Format::Vtab1k, Path::new("x")).is_none());
    }
}
