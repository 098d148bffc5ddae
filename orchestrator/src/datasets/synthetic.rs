//! The embedded benchmark: procedural images, deterministic by seed, for VTAB-flavoured
//! tasks (object category, count, orientation, texture) and a pretraining source task.
//! Pure Rust and self-contained (its own PRNG), so the pixels never change with a crate.
use serde::{Deserialize, Serialize};

/// SplitMix64: tiny, fast, and fixed forever (the data's identity depends on it).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }
}

/// A synthetic task. Natural-flavoured: `shape`, `texture`; structured: `count`, `orientation`;
/// `source` is the pretraining task (shape x texture, 16 classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Shape,
    Count,
    Orientation,
    Texture,
    Source,
}

impl Task {
    pub fn parse(s: &str) -> Option<Task> {
        match s {
            "shape" => Some(Task::Shape),
            "count" => Some(Task::Count),
            "orientation" => Some(Task::Orientation),
            "texture" => Some(Task::Texture),
            "source" => Some(Task::Source),
            _ => None,
        }
    }

    pub const NAMES: [&'static str; 5] = ["shape", "count", "orientation", "texture", "source"];

    pub fn class_names(self) -> Vec<String> {
        let v: Vec<&str> = match self {
            Task::Shape => SHAPES.to_vec(),
            Task::Count => vec!["1", "2", "3", "4", "5", "6"],
            Task::Orientation => vec![
                "0deg", "22deg", "45deg", "67deg", "90deg", "112deg", "135deg", "157deg",
            ],
            Task::Texture => TEXTURES.to_vec(),
            Task::Source => {
                return SHAPES[..4]
                    .iter()
                    .flat_map(|s| TEXTURES[..4].iter().map(move |t| format!("{s}/{t}")))
                    .collect()
            }
        };
        v.into_iter().map(String::from).collect()
    }
}

const SHAPES: [&str; 6] = ["disc", "square", "triangle", "ring", "cross", "diamond"];
const TEXTURES: [&str; 6] = [
    "plain", "hstripes", "vstripes", "checker", "dots", "diagonal",
];

/// One image (CHW u8, `size` x `size`) and its label; `index` selects the example, `seed`
/// the dataset (train and test use different seeds).
pub fn example(task: Task, size: u32, seed: u64, index: u64) -> (Vec<u8>, i64) {
    let mut rng = SplitMix64::new(
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
            ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ task as u64,
    );
    let mut canvas = Canvas::new(size, &mut rng);
    let n_classes = task.class_names().len() as u64;
    let label = rng.below(n_classes) as i64;
    let s = size as f32;
    match task {
        Task::Shape => {
            let tex = rng.below(TEXTURES.len() as u64) as usize;
            canvas.shape(
                label as usize,
                tex,
                s * 0.5 + rng.range(-0.15, 0.15) * s,
                s * 0.5 + rng.range(-0.15, 0.15) * s,
                s * rng.range(0.2, 0.32),
                &mut rng,
            );
        }
        Task::Texture => {
            let shape = rng.below(SHAPES.len() as u64) as usize;
            canvas.shape(
                shape,
                label as usize,
                s * 0.5,
                s * 0.5,
                s * rng.range(0.3, 0.42),
                &mut rng,
            );
        }
        Task::Count => {
            let mut placed: Vec<(f32, f32)> = Vec::new();
            let r = s * 0.08;
            while placed.len() < (label + 1) as usize {
                let (x, y) = (
                    rng.range(r * 1.5, s - r * 1.5),
                    rng.range(r * 1.5, s - r * 1.5),
                );
                if placed
                    .iter()
                    .all(|(px, py)| (px - x).hypot(py - y) > 2.6 * r)
                {
                    placed.push((x, y));
                    let shape = rng.below(SHAPES.len() as u64) as usize;
                    canvas.shape(shape, 0, x, y, r, &mut rng);
                }
            }
        }
        Task::Orientation => {
            let angle = label as f32 * std::f32::consts::PI / 8.0 + rng.range(-0.08, 0.08);
            canvas.bar(
                s * 0.5 + rng.range(-0.1, 0.1) * s,
                s * 0.5 + rng.range(-0.1, 0.1) * s,
                s * 0.38,
                s * 0.07,
                angle,
                &mut rng,
            );
        }
        Task::Source => {
            let (shape, tex) = (label as usize / 4, label as usize % 4);
            canvas.shape(
                shape,
                tex,
                s * 0.5 + rng.range(-0.2, 0.2) * s,
                s * 0.5 + rng.range(-0.2, 0.2) * s,
                s * rng.range(0.22, 0.38),
                &mut rng,
            );
        }
    }
    (canvas.into_chw(), label)
}

struct Canvas {
    size: u32,
    rgb: Vec<[f32; 3]>,
}

impl Canvas {
    /// A smooth random background with pixel noise.
    fn new(size: u32, rng: &mut SplitMix64) -> Self {
        let a = Self::colour(rng, 0.1, 0.6);
        let b = Self::colour(rng, 0.1, 0.6);
        let (fx, fy) = (rng.range(-1.0, 1.0), rng.range(-1.0, 1.0));
        let mut rgb = Vec::with_capacity((size * size) as usize);
        for y in 0..size {
            for x in 0..size {
                let t = 0.5 + 0.5 * ((x as f32 * fx + y as f32 * fy) / size as f32 * 3.0).sin();
                let n = rng.range(-0.06, 0.06);
                rgb.push([0, 1, 2].map(|c| a[c] * (1.0 - t) + b[c] * t + n));
            }
        }
        Canvas { size, rgb }
    }

    fn texture(tex: usize, x: f32, y: f32, period: f32) -> f32 {
        let (u, v) = (x / period, y / period);
        match tex {
            0 => 1.0,
            1 => (v.floor() as i64 % 2 == 0) as i32 as f32,
            2 => (u.floor() as i64 % 2 == 0) as i32 as f32,
            3 => ((u.floor() + v.floor()) as i64 % 2 == 0) as i32 as f32,
            4 => (((u.fract() - 0.5).hypot(v.fract() - 0.5)) < 0.3) as i32 as f32,
            _ => (((u + v).floor()) as i64 % 2 == 0) as i32 as f32,
        }
    }

    fn inside(shape: usize, dx: f32, dy: f32, r: f32) -> bool {
        match shape {
            0 => dx.hypot(dy) <= r,
            1 => dx.abs() <= r * 0.85 && dy.abs() <= r * 0.85,
            2 => dy <= r * 0.8 && dy >= -r && dx.abs() <= (dy + r) * 0.6,
            3 => (r * 0.55..=r).contains(&dx.hypot(dy)),
            4 => (dx.abs() <= r * 0.3 && dy.abs() <= r) || (dy.abs() <= r * 0.3 && dx.abs() <= r),
            _ => dx.abs() + dy.abs() <= r,
        }
    }

    /// A random colour, each channel uniform in [lo, hi) (drawn in channel order).
    fn colour(rng: &mut SplitMix64, lo: f32, hi: f32) -> [f32; 3] {
        [0, 1, 2].map(|_| rng.range(lo, hi))
    }

    /// Sets every pixel for which `f(dx, dy)` (pixel centre minus (cx, cy)) gives a colour.
    fn paint(&mut self, cx: f32, cy: f32, f: impl Fn(f32, f32) -> Option<[f32; 3]>) {
        for y in 0..self.size {
            for x in 0..self.size {
                if let Some(c) = f(x as f32 + 0.5 - cx, y as f32 + 0.5 - cy) {
                    self.rgb[(y * self.size + x) as usize] = c;
                }
            }
        }
    }

    /// A shape filled with a two-colour texture.
    fn shape(&mut self, shape: usize, tex: usize, cx: f32, cy: f32, r: f32, rng: &mut SplitMix64) {
        let fg = Self::colour(rng, 0.6, 1.0);
        let bg = Self::colour(rng, 0.0, 0.3);
        let period = (r / 2.5).max(1.5);
        self.paint(cx, cy, |dx, dy| {
            Self::inside(shape, dx, dy, r).then(|| {
                let t = Self::texture(tex, dx + 64.0, dy + 64.0, period);
                [0, 1, 2].map(|c| fg[c] * t + bg[c] * (1.0 - t))
            })
        });
    }

    /// A rotated bar.
    fn bar(
        &mut self,
        cx: f32,
        cy: f32,
        half_len: f32,
        half_width: f32,
        angle: f32,
        rng: &mut SplitMix64,
    ) {
        let col = Self::colour(rng, 0.7, 1.0);
        let (c, s) = (angle.cos(), angle.sin());
        self.paint(cx, cy, |dx, dy| {
            let (along, across) = (dx * c + dy * s, -dx * s + dy * c);
            (along.abs() <= half_len && across.abs() <= half_width).then_some(col)
        });
    }

    fn into_chw(self) -> Vec<u8> {
        let n = (self.size * self.size) as usize;
        let mut out = vec![0u8; 3 * n];
        for (i, p) in self.rgb.iter().enumerate() {
            for c in 0..3 {
                out[c * n + i] = (p[c].clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_seed_dependent() {
        let a = example(Task::Shape, 32, 1, 5);
        assert_eq!(a, example(Task::Shape, 32, 1, 5));
        assert_ne!(a.0, example(Task::Shape, 32, 2, 5).0);
        assert_eq!(a.0.len(), 3 * 32 * 32);
    }

    #[test]
    fn labels_cover_every_class() {
        for name in Task::NAMES {
            let task = Task::parse(name).unwrap();
            let n = task.class_names().len();
            let mut seen = vec![false; n];
            for i in 0..400 {
                seen[example(task, 24, 0, i).1 as usize] = true;
            }
            assert!(seen.iter().all(|s| *s), "{name}: some class never drawn");
        }
    }
}
