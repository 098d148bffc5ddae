//! Numerics: the device kind and arithmetic a device node computes in (`cpu-fp32`,
//! `cuda-bf16`, ...), resolved from the suite's `precision` before hashing. Owns no devices.
use kernels::train::Precision;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where device nodes (train, eval, pretraining) compute. Part of their keys: a CPU fp32
/// result and a GPU bf16 result are different results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

/// The resolved arithmetic of a device node: never `auto`. Serialised as one string
/// (`"cuda-bf16"`), which is also how keys and reports show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numerics {
    pub device: DeviceKind,
    /// `Fp32`, `Bf16` (autocast) or `Tf32` (CUDA only); never `Auto`.
    pub precision: Precision,
}

impl Numerics {
    /// Resolves a suite's `precision` on `device`: `auto` is bf16 autocast on CUDA and fp32 on
    /// the CPU; `tf32` on the CPU computes exactly as fp32 and is keyed as such.
    pub fn resolve(precision: Precision, device: DeviceKind) -> Numerics {
        let precision = match (precision, device) {
            (Precision::Auto, DeviceKind::Cuda) => Precision::Bf16,
            (Precision::Auto | Precision::Tf32, DeviceKind::Cpu) => Precision::Fp32,
            (p, _) => p,
        };
        Numerics { device, precision }
    }

    fn precision_str(self) -> &'static str {
        match self.precision {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Tf32 => "tf32",
            Precision::Auto => unreachable!("Numerics are resolved"),
        }
    }
}

impl fmt::Display for Numerics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.device.as_str(), self.precision_str())
    }
}

impl std::str::FromStr for Numerics {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: expected DEVICE-PRECISION such as cpu-fp32 or cuda-bf16");
        let (d, p) = s.split_once('-').ok_or_else(bad)?;
        let device = match d {
            "cpu" => DeviceKind::Cpu,
            "cuda" => DeviceKind::Cuda,
            _ => return Err(bad()),
        };
        let precision = match p {
            "fp32" => Precision::Fp32,
            "bf16" => Precision::Bf16,
            "tf32" if device == DeviceKind::Cuda => Precision::Tf32,
            _ => return Err(bad()),
        };
        Ok(Numerics { device, precision })
    }
}

impl Serialize for Numerics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Numerics {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_resolves_per_device_and_cpu_tf32_is_fp32() {
        let r = |p, d| Numerics::resolve(p, d).to_string();
        assert_eq!(r(Precision::Auto, DeviceKind::Cpu), "cpu-fp32");
        assert_eq!(r(Precision::Auto, DeviceKind::Cuda), "cuda-bf16");
        assert_eq!(r(Precision::Tf32, DeviceKind::Cpu), "cpu-fp32");
        assert_eq!(r(Precision::Tf32, DeviceKind::Cuda), "cuda-tf32");
        assert_eq!(r(Precision::Bf16, DeviceKind::Cpu), "cpu-bf16");
        assert_eq!(r(Precision::Fp32, DeviceKind::Cuda), "cuda-fp32");
    }

    #[test]
    fn roundtrips_as_one_string() {
        for s in [
            "cpu-fp32",
            "cpu-bf16",
            "cuda-fp32",
            "cuda-bf16",
            "cuda-tf32",
        ] {
            let n: Numerics = s.parse().unwrap();
            assert_eq!(serde_json::to_string(&n).unwrap(), format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<Numerics>(&format!("\"{s}\"")).unwrap(),
                n
            );
        }
        assert!("cpu-tf32".parse::<Numerics>().is_err());
        assert!("cpu-auto".parse::<Numerics>().is_err());
    }
}
