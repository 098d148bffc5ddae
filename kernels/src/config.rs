//! The ViT architecture description, with timm's field names and named presets.
//! Pure data: no tensors here.
use serde::{Deserialize, Serialize};

/// timm `VisionTransformer` hyper-parameters (class-token pooling, pre-norm blocks,
/// LayerNorm eps 1e-6, exact GELU, fused qkv with bias).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    pub img_size: i64,
    pub patch_size: i64,
    #[serde(default = "three")]
    pub in_chans: i64,
    pub num_classes: i64,
    pub embed_dim: i64,
    pub depth: i64,
    pub num_heads: i64,
    pub mlp_ratio: f64,
    #[serde(default = "yes")]
    pub qkv_bias: bool,
}

fn three() -> i64 {
    3
}
fn yes() -> bool {
    true
}

/// (name, embed_dim, depth, num_heads) of timm's patch-16 presets.
const PRESETS: [(&str, i64, i64, i64); 4] = [
    ("vit_tiny_patch16_224", 192, 12, 3),
    ("vit_small_patch16_224", 384, 12, 6),
    ("vit_base_patch16_224", 768, 12, 12),
    ("vit_large_patch16_224", 1024, 24, 16),
];

impl VitConfig {
    /// A timm preset by name (`vit_base_patch16_224`, ...) with ImageNet's 1000 classes.
    pub fn preset(name: &str) -> Option<Self> {
        PRESETS
            .iter()
            .find(|p| p.0 == name)
            .map(|&(_, embed_dim, depth, num_heads)| VitConfig {
                img_size: 224,
                patch_size: 16,
                in_chans: 3,
                num_classes: 1000,
                embed_dim,
                depth,
                num_heads,
                mlp_ratio: 4.0,
                qkv_bias: true,
            })
    }

    pub fn preset_names() -> impl Iterator<Item = &'static str> {
        PRESETS.iter().map(|p| p.0)
    }

    pub fn grid_size(&self) -> i64 {
        self.img_size / self.patch_size
    }

    pub fn num_patches(&self) -> i64 {
        self.grid_size() * self.grid_size()
    }

    pub fn head_dim(&self) -> i64 {
        self.embed_dim / self.num_heads
    }

    pub fn mlp_hidden(&self) -> i64 {
        (self.embed_dim as f64 * self.mlp_ratio) as i64
    }

    /// Checks the divisibility rules timm asserts at construction.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("img_size", self.img_size),
            ("patch_size", self.patch_size),
            ("in_chans", self.in_chans),
            ("embed_dim", self.embed_dim),
            ("depth", self.depth),
            ("num_heads", self.num_heads),
        ];
        if let Some((k, v)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(format!("{k} must be positive, got {v}"));
        }
        if self.num_classes < 0 {
            return Err(format!(
                "num_classes must be >= 0, got {}",
                self.num_classes
            ));
        }
        if self.img_size % self.patch_size != 0 {
            return Err(format!(
                "img_size {} is not a multiple of patch_size {}",
                self.img_size, self.patch_size
            ));
        }
        if self.embed_dim % self.num_heads != 0 {
            return Err(format!(
                "embed_dim {} is not a multiple of num_heads {}",
                self.embed_dim, self.num_heads
            ));
        }
        if self.mlp_hidden() <= 0 {
            return Err(format!(
                "mlp_ratio {} gives no hidden units",
                self.mlp_ratio
            ));
        }
        Ok(())
    }
}
