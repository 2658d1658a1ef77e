//! The model language's wire form, typed: one struct of PyTorch arguments per layer op, one enum
//! of the ops ([`LayerOp`], tagged by `type`), and the [`Model`] that holds them. The contract's
//! `Model` schema (every op, argument, default and range) is generated from these types.
//!
//! The reader in `parse.rs` stays hand-written over `serde_json::Value`: it names the field of
//! every refusal by its JSON pointer, hints at a misspelt key, checks ranges before any
//! arithmetic and reads PyTorch's loose forms (an int or a list, type names in any case), which
//! a derived `Deserialize` would turn into generic messages. Tests bind the two: for every op,
//! the keys the reader consults are exactly the fields here, every op's example here is read
//! without error, and every type name the reader knows is a variant here.
#![allow(dead_code)] // the fields are read by the schema derive and by serde, never by hand

use serde::Serialize;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// An int (every axis) or `[h, w]`, as `torch.nn` takes sizes.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Size2 {
    All(u64),
    Each([u64; 2]),
}

/// A volume layer's size: an int (every axis) or `[d, h, w]`.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Size3 {
    All(u64),
    Each([u64; 3]),
}

/// An int, or `[d, h, w]` where `null` keeps that axis's input size.
#[derive(Serialize)]
#[serde(untagged)]
pub enum AdaptiveSize3 {
    All(u64),
    Each([Option<u64>; 3]),
}

/// An int, `[d, h, w]`, `"same"` (stride 1 only) or `"valid"` (no padding).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ConvPadding3 {
    Size(Size3),
    Named(NamedPadding),
}

/// A 1-D layer's size: an int or `[l]`.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Size1 {
    All(u64),
    Each([u64; 1]),
}

/// An int, `[h, w]`, `"same"` (stride 1 only) or `"valid"` (no padding).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ConvPadding2 {
    Size(Size2),
    Named(NamedPadding),
}

/// An int, `[l]`, `"same"` (stride 1 only) or `"valid"` (no padding).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ConvPadding1 {
    Size(Size1),
    Named(NamedPadding),
}

/// `"same"` keeps the size (stride 1 only); `"valid"` pads nothing.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NamedPadding {
    Same,
    Valid,
}

/// A transposed convolution pads with zeros only (as PyTorch).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ZerosOnly {
    Zeros,
}

/// GELU's exact form only.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExactOnly {
    None,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaddingMode {
    Zeros,
    Reflect,
    Replicate,
    Circular,
}

/// A convolution's fields, in its 1-D and 2-D forms and transposed: `$size` an int or `[l]`, or
/// an int or `[h, w]`; `$padding` the same (with "same" and "valid" for convolutions);
/// `$padding_mode` the modes the layer takes; `$extra` fields after `padding`.
macro_rules! conv_layer {
    ($(#[$m:meta])* $name:ident, $size:ty, $padding:ty, $padding_mode:ty $(, { $($extra:tt)* })?) => {
        #[derive(Serialize, ToSchema)]
        $(#[$m])*
        pub struct $name {
            /// Checked against the inferred input, never trusted.
            #[schema(minimum = 1)]
            pub in_channels: Option<u64>,
            #[schema(minimum = 1)]
            pub out_channels: u64,
            pub kernel_size: $size,
            /// Default 1.
            pub stride: Option<$size>,
            /// Default 0.
            pub padding: Option<$padding>,
            $($($extra)*)?
            /// Default 1.
            pub dilation: Option<$size>,
            /// Dividing out_channels (and the input's channels).
            #[schema(minimum = 1, default = 1)]
            pub groups: Option<u64>,
            #[schema(default = true)]
            pub bias: Option<bool>,
            /// Default zeros.
            pub padding_mode: Option<$padding_mode>,
        }
    };
}

conv_layer!(
    /// `torch.nn.Conv2d`.
    #[schema(example = json!({"out_channels": 64, "kernel_size": 3, "padding": 1}))]
    Conv2dLayer, Size2, ConvPadding2, PaddingMode
);
conv_layer!(
    /// `torch.nn.Conv1d` on a signal `[C, L]`.
    #[schema(example = json!({"out_channels": 16, "kernel_size": 5, "stride": 2}))]
    Conv1dLayer, Size1, ConvPadding1, PaddingMode
);
conv_layer!(
    /// `torch.nn.Conv3d` on a volume `[C, D, H, W]` (a clip of frames, a scan).
    #[schema(example = json!({"out_channels": 64, "kernel_size": [3, 7, 7], "stride": [1, 2, 2], "padding": [1, 3, 3]}))]
    Conv3dLayer, Size3, ConvPadding3, PaddingMode
);
conv_layer!(
    /// `torch.nn.ConvTranspose2d`.
    #[schema(example = json!({"out_channels": 32, "kernel_size": 2, "stride": 2}))]
    ConvTranspose2dLayer, Size2, Size2, ZerosOnly, {
        /// Default 0; smaller than stride or dilation on each axis.
        pub output_padding: Option<Size2>,
    }
);
conv_layer!(
    /// `torch.nn.ConvTranspose3d` on a volume `[C, D, H, W]`.
    #[schema(example = json!({"out_channels": 32, "kernel_size": 2, "stride": 2}))]
    ConvTranspose3dLayer, Size3, Size3, ZerosOnly, {
        /// Default 0; smaller than stride or dilation on each axis.
        pub output_padding: Option<Size3>,
    }
);
conv_layer!(
    /// `torch.nn.ConvTranspose1d` on a signal `[C, L]`.
    #[schema(example = json!({"out_channels": 8, "kernel_size": 4, "stride": 2, "padding": 1}))]
    ConvTranspose1dLayer, Size1, Size1, ZerosOnly, {
        /// Default 0; smaller than stride or dilation on each axis.
        pub output_padding: Option<Size1>,
    }
);

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpsampleMode {
    Nearest,
    /// images
    Bilinear,
    /// 1-D signals
    Linear,
    /// volumes
    Trilinear,
}

/// An int, `[h, w]` (an image), `[d, h, w]` (a volume) or `[l]` (a signal).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum UpsampleSize {
    All(u64),
    #[schema(value_type = Vec<u64>)]
    Each(Vec<u64>),
}

/// A number above 0 and at most 1024 (every axis), or one per axis: `[h, w]` (an image),
/// `[d, h, w]` (a volume), `[l]` (a signal).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum UpsampleFactor {
    All(f64),
    #[schema(value_type = Vec<f64>)]
    Each(Vec<f64>),
}

/// `torch.nn.Upsample`: `scale_factor` (the output `floor(input * scale_factor)`, the kernel
/// stepping by `1/scale_factor`, as nn.Upsample passes it on) or `size` (any size, the kernel
/// stepping by input/output), not both. Output position `o` reads the input positions PyTorch's
/// float arithmetic gives it: nearest `floor(o * scale)` in float32; the linear modes the two
/// neighbours of `(o + 0.5) * scale - 0.5` (clamped at 0) or, with `align_corners`, of
/// `o * (in - 1)/(out - 1)`, without a neighbour whose weight is zero. A linear upsampling whose
/// positions depend on that arithmetic (float32 or float64, a fused multiply-add or not: a
/// linear upsampling by 3) is a 422 naming the position. On a signal `[C, L]`: nearest or
/// linear; on a volume `[C, D, H, W]`: nearest or trilinear.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"scale_factor": 2, "mode": "nearest"}))]
pub struct UpsampleLayer {
    pub scale_factor: Option<UpsampleFactor>,
    pub size: Option<UpsampleSize>,
    /// Default nearest.
    pub mode: Option<UpsampleMode>,
    /// Linear modes only; default false (PyTorch's).
    pub align_corners: Option<bool>,
    /// false only.
    pub recompute_scale_factor: Option<bool>,
}

/// `torch.nn.Linear` on features `[F]` or on each token of `[L, D]`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"out_features": 10}))]
pub struct LinearLayer {
    #[schema(minimum = 1)]
    pub in_features: Option<u64>,
    #[schema(minimum = 1)]
    pub out_features: u64,
    #[schema(default = true)]
    pub bias: Option<bool>,
    /// The name (or path) of a linear or embedding layer whose weight this layer uses, of the
    /// same shape (`[out_features, in_features]`, `[num_embeddings, embedding_dim]`): GPT-2's
    /// `lm_head.weight = wte.weight`. The tensor is one parameter: counted once, under that
    /// layer, and its gradient sums both uses.
    pub weight_of: Option<String>,
}

/// A pooling layer's fields: the window, then the pool's own (`$extra`).
macro_rules! pool_layer {
    ($(#[$m:meta])* $name:ident, $size:ty, { $($extra:tt)* }) => {
        #[derive(Serialize, ToSchema)]
        $(#[$m])*
        pub struct $name {
            pub kernel_size: $size,
            /// Default kernel_size.
            pub stride: Option<$size>,
            /// Default 0; at most half the kernel.
            pub padding: Option<$size>,
            #[schema(default = false)]
            pub ceil_mode: Option<bool>,
            $($extra)*
        }
    };
}

macro_rules! max_pool_layer {
    ($(#[$m:meta])* $name:ident, $size:ty) => {
        pool_layer!($(#[$m])* $name, $size, {
            /// Default 1.
            pub dilation: Option<$size>,
            /// false only.
            pub return_indices: Option<bool>,
        });
    };
}

macro_rules! avg_pool_layer {
    ($(#[$m:meta])* $name:ident, $size:ty) => {
        pool_layer!($(#[$m])* $name, $size, {
            #[schema(default = true)]
            pub count_include_pad: Option<bool>,
        });
    };
}

max_pool_layer!(
    /// `torch.nn.MaxPool2d`.
    #[schema(example = json!({"kernel_size": 2, "stride": 2}))]
    MaxPool2dLayer, Size2
);
max_pool_layer!(
    /// `torch.nn.MaxPool1d` on a signal.
    #[schema(example = json!({"kernel_size": 3, "stride": 2, "padding": 1}))]
    MaxPool1dLayer, Size1
);
max_pool_layer!(
    /// `torch.nn.MaxPool3d` on a volume.
    #[schema(example = json!({"kernel_size": [1, 3, 3], "stride": [1, 2, 2], "padding": [0, 1, 1]}))]
    MaxPool3dLayer, Size3
);
avg_pool_layer!(
    /// `torch.nn.AvgPool3d` on a volume.
    #[schema(example = json!({"kernel_size": 2}))]
    AvgPool3dLayer, Size3
);
avg_pool_layer!(
    /// `torch.nn.AvgPool2d`.
    #[schema(example = json!({"kernel_size": 3, "stride": 1, "padding": 1}))]
    AvgPool2dLayer, Size2
);
avg_pool_layer!(
    /// `torch.nn.AvgPool1d` on a signal.
    #[schema(example = json!({"kernel_size": 4}))]
    AvgPool1dLayer, Size1
);

/// An int, or `[h, w]` where `null` keeps that axis's input size.
#[derive(Serialize)]
#[serde(untagged)]
pub enum AdaptiveSize2 {
    All(u64),
    Each([Option<u64>; 2]),
}

/// `torch.nn.AdaptiveAvgPool2d`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"output_size": 1}))]
pub struct AdaptiveAvgPool2dLayer {
    pub output_size: AdaptiveSize2,
}

/// `torch.nn.AdaptiveMaxPool2d`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"output_size": [7, 7]}))]
pub struct AdaptiveMaxPool2dLayer {
    pub output_size: AdaptiveSize2,
    /// false only.
    pub return_indices: Option<bool>,
}

/// `torch.nn.AdaptiveAvgPool3d` on a volume.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"output_size": 1}))]
pub struct AdaptiveAvgPool3dLayer {
    pub output_size: AdaptiveSize3,
}

/// `torch.nn.AdaptiveMaxPool3d` on a volume.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"output_size": [1, 7, 7]}))]
pub struct AdaptiveMaxPool3dLayer {
    pub output_size: AdaptiveSize3,
    /// false only.
    pub return_indices: Option<bool>,
}

/// `torch.nn.AdaptiveAvgPool1d` on a signal.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"output_size": 1}))]
pub struct AdaptiveAvgPool1dLayer {
    pub output_size: Size1,
}

/// `torch.nn.AdaptiveMaxPool1d` on a signal.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"output_size": 8}))]
pub struct AdaptiveMaxPool1dLayer {
    pub output_size: Size1,
    pub return_indices: Option<bool>,
}

/// `torch.nn.BatchNorm2d` on `[C, H, W]`, `BatchNorm1d` on `[F]` (or a signal `[C, L]`),
/// `BatchNorm3d` on a volume `[C, D, H, W]`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"num_features": 64}))]
pub struct BatchNormLayer {
    #[schema(minimum = 1)]
    pub num_features: Option<u64>,
    #[schema(minimum = 0, maximum = 1, default = 1e-5)]
    pub eps: Option<f64>,
    #[schema(minimum = 0, maximum = 1, default = 0.1)]
    pub momentum: Option<f64>,
    #[schema(default = true)]
    pub affine: Option<bool>,
    #[schema(default = true)]
    pub track_running_stats: Option<bool>,
}

/// `torch.nn.GroupNorm`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"num_groups": 8, "num_channels": 64}))]
pub struct GroupNormLayer {
    #[schema(minimum = 1)]
    pub num_groups: u64,
    #[schema(minimum = 1)]
    pub num_channels: Option<u64>,
    #[schema(minimum = 0, maximum = 1, default = 1e-5)]
    pub eps: Option<f64>,
    #[schema(default = true)]
    pub affine: Option<bool>,
}

/// `torch.nn.InstanceNorm2d` on an image `[C, H, W]`, `InstanceNorm3d` on a volume
/// `[C, D, H, W]` (instance statistics).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"num_features": 64, "affine": true}))]
pub struct InstanceNormLayer {
    #[schema(minimum = 1)]
    pub num_features: Option<u64>,
    #[schema(minimum = 0, maximum = 1, default = 1e-5)]
    pub eps: Option<f64>,
    #[schema(minimum = 0, maximum = 1, default = 0.1)]
    pub momentum: Option<f64>,
    #[schema(default = false)]
    pub affine: Option<bool>,
    /// false only.
    pub track_running_stats: Option<bool>,
}

/// An int or a list of 1 to 4 ints (the trailing axes: up to a volume's four).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Ints {
    One(u64),
    #[schema(value_type = Vec<u64>)]
    Many(Vec<u64>),
}

/// `torch.nn.LayerNorm(normalized_shape)` over the trailing axes it names; the same arguments for
/// `layernorm2d`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"normalized_shape": [768], "eps": 1e-6}))]
pub struct LayerNormLayer {
    pub normalized_shape: Ints,
    #[schema(minimum = 0, maximum = 1, default = 1e-5)]
    pub eps: Option<f64>,
    #[schema(default = true)]
    pub elementwise_affine: Option<bool>,
    #[schema(default = true)]
    pub bias: Option<bool>,
}

/// PyTorch dims, batch axis 0, negative from the end.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Dims {
    One(i64),
    #[schema(value_type = Vec<i64>)]
    Many(Vec<i64>),
}

/// `x.mean(dim, keepdim)`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"dim": [2, 3]}))]
pub struct MeanLayer {
    pub dim: Dims,
    #[schema(default = false)]
    pub keepdim: Option<bool>,
}

/// `torch.nn.Softmax(dim)`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"dim": -1}))]
pub struct SoftmaxLayer {
    #[schema(minimum = -8, maximum = 8)]
    pub dim: i64,
}

/// An activation module.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"inplace": true}))]
pub struct ActivationLayer {
    #[schema(default = false)]
    pub inplace: Option<bool>,
}

/// `torch.nn.LeakyReLU`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"negative_slope": 0.2}))]
pub struct LeakyReluLayer {
    #[schema(default = false)]
    pub inplace: Option<bool>,
    #[schema(default = 0.01)]
    pub negative_slope: Option<f64>,
}

/// `torch.nn.PReLU`: leaky_relu whose negative slopes are learned, one shared
/// (`num_parameters` 1) or one per channel (the sample's axis 0, PyTorch's dim 1). Its `weight`
/// starts at `init` whatever the diagnostics' `init` (as nn.PReLU's reset_parameters); an ONNX
/// file's PRelu slope is read as it.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"num_parameters": 64}))]
pub struct PreluLayer {
    #[schema(default = 1, minimum = 1)]
    pub num_parameters: Option<u64>,
    #[schema(default = 0.25)]
    pub init: Option<f64>,
    #[schema(default = false)]
    pub inplace: Option<bool>,
}

/// `torch.nn.GELU` (exact form).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"approximate": "none"}))]
pub struct GeluLayer {
    #[schema(default = false)]
    pub inplace: Option<bool>,
    pub approximate: Option<ExactOnly>,
}

/// An int (every side) or `[left, right, top, bottom]`.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Pad2 {
    All(u64),
    Each([u64; 4]),
}

/// An int (both ends) or `[left, right]`.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Pad1 {
    All(u64),
    Each([u64; 2]),
}

/// `torch.nn.ZeroPad2d`, `ReflectionPad2d`, `ReplicationPad2d`, `CircularPad2d`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"padding": [1, 1, 2, 2]}))]
pub struct Pad2dLayer {
    pub padding: Pad2,
}

/// An int (every side) or `[left, right, top, bottom, front, back]`.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Pad3 {
    All(u64),
    Each([u64; 6]),
}

/// `torch.nn.ZeroPad3d`, `ReflectionPad3d`, `ReplicationPad3d`, `CircularPad3d` on a volume
/// `[C, D, H, W]`: PyTorch's 6-tuple pads the width, then the height, then the depth.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"padding": [1, 1, 1, 1, 0, 0]}))]
pub struct Pad3dLayer {
    pub padding: Pad3,
}

/// The 1-D pads on a signal.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"padding": [2, 0]}))]
pub struct Pad1dLayer {
    pub padding: Pad1,
}

/// `x * factor` (`x / c` is factor 1/c): attention's `q @ k^T / sqrt(d)` written by hand. Every
/// position keeps its range; one multiplication per element, FLOPs only under
/// `count_residual_adds` (as a `mul`), and no tool counts it.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"factor": 0.125}))]
pub struct ScaleLayer {
    /// Finite and not zero.
    pub factor: f64,
}

/// `torch.nn.Dropout` (the identity in every analysis; counted as PyTorch counts it).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"p": 0.5}))]
pub struct DropoutLayer {
    #[schema(minimum = 0, maximum = 1, default = 0.5)]
    pub p: Option<f64>,
    #[schema(default = false)]
    pub inplace: Option<bool>,
}

/// `torch.nn.Flatten(start_dim, end_dim)`, PyTorch's dims (batch axis 0): 1 to -1 (a sample into
/// features, the default), 2 to -1 (an image's positions into one axis, `[C, H*W]`), or any other
/// sample axes (a reshape).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"start_dim": 1}))]
pub struct FlattenLayer {
    pub start_dim: Option<i64>,
    pub end_dim: Option<i64>,
}

/// `x.reshape(batch, *shape)` / `x.view(batch, *shape)`: the same elements in row-major order.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"shape": [16, 7, 7]}))]
pub struct ReshapeLayer {
    /// The sample's new shape without the batch axis, 1 to 3 sizes; one may be -1 (inferred).
    #[schema(min_items = 1, max_items = 3)]
    pub shape: Vec<i64>,
}

/// `torch.nn.Unflatten(dim, unflattened_size)`: one axis split into several.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"dim": 1, "unflattened_size": [16, 7, 7]}))]
pub struct UnflattenLayer {
    /// PyTorch's dim (batch axis 0, negative from the end).
    #[schema(minimum = -8, maximum = 8)]
    pub dim: i64,
    /// Its sizes, multiplying to the axis's size; one may be -1.
    #[schema(min_items = 1, max_items = 3)]
    pub unflattened_size: Vec<i64>,
}

/// `x.transpose(dim0, dim1)`: swaps two sample axes (PyTorch's dims: the batch axis, 0, stays;
/// negative from the end), as `k.transpose(-2, -1)` in attention written by hand.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"dim0": 1, "dim1": 2}))]
pub struct TransposeLayer {
    #[schema(minimum = -8, maximum = 8)]
    pub dim0: i64,
    #[schema(minimum = -8, maximum = 8)]
    pub dim1: i64,
}

/// `x.permute(*dims)`: every axis of the input in its new order, the batch axis first
/// (`[0, 2, 1, 3]` moves a sequence split into heads, `[L, H, d]`, to `[H, L, d]`).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"dims": [0, 2, 1, 3]}))]
pub struct PermuteLayer {
    #[schema(min_items = 3, max_items = 5)]
    pub dims: Vec<i64>,
}

/// `x[:, index]`: one token's features (dim 1 only).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"dim": 1, "index": 0}))]
pub struct SelectLayer {
    pub dim: i64,
    pub index: u64,
}

/// `torch.narrow(x, dim, start, length)`: positions `start..start + length` along PyTorch's dim
/// (batch axis 0): channels (dim 1) of an image, a volume or a feature vector (`x.chunk(2, 1)` is
/// two of them), or a crop of rows, columns or slices; on a two-axis sample a signal's channels
/// or positions, a sequence's tokens or features.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"dim": 1, "start": 0, "length": 24}))]
pub struct NarrowLayer {
    #[schema(minimum = -4, maximum = 4)]
    pub dim: i64,
    #[schema(minimum = 0)]
    pub start: u64,
    #[schema(minimum = 1)]
    pub length: u64,
}

/// `torch.nn.ChannelShuffle(groups)` (ShuffleNet): the channels of an image or a volume viewed
/// as `[groups, C / groups]`, transposed, flattened.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"groups": 2}))]
pub struct ChannelShuffleLayer {
    #[schema(minimum = 1)]
    pub groups: u64,
}

/// `torch.nn.Embedding` reading int64 token ids `[L]`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"num_embeddings": 1000, "embedding_dim": 64}))]
pub struct EmbeddingLayer {
    #[schema(minimum = 1)]
    pub num_embeddings: u64,
    #[schema(minimum = 1)]
    pub embedding_dim: u64,
    /// Below num_embeddings.
    pub padding_idx: Option<u64>,
    /// null only.
    pub max_norm: Option<f64>,
    pub scale_grad_by_freq: Option<bool>,
    pub sparse: Option<bool>,
    /// The name (or path) of a linear or embedding layer whose weight this one uses (see
    /// `linear`'s `weight_of`).
    pub weight_of: Option<String>,
    /// A position embedding (graph node, no inputs): nanoGPT's `wpe(torch.arange(L))` for
    /// `positions: L` (at most num_embeddings), rows `0..L` of the table, `[L, embedding_dim]`,
    /// read by add or concat; the whole table is its parameter.
    #[schema(minimum = 1)]
    pub positions: Option<u64>,
}

/// `torch.nn.MultiheadAttention`: self-attention `attn(x, x, x)[0]` on `[L, E]`; in a graph
/// node with inputs `[query, key_value]` or `[query, key, value]`, cross-attention.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"embed_dim": 64, "num_heads": 4, "is_causal": true}))]
pub struct MultiheadAttentionLayer {
    /// Checked against the input's E.
    #[schema(minimum = 1)]
    pub embed_dim: Option<u64>,
    #[schema(minimum = 1)]
    pub num_heads: u64,
    #[schema(default = true)]
    pub bias: Option<bool>,
    /// Accepted: the sample is the same.
    pub batch_first: Option<bool>,
    #[schema(minimum = 0, maximum = 1)]
    pub dropout: Option<f64>,
    /// false only.
    pub add_bias_kv: Option<bool>,
    /// false only.
    pub add_zero_attn: Option<bool>,
    /// Equal to embed_dim only.
    pub kdim: Option<u64>,
    /// Equal to embed_dim only.
    pub vdim: Option<u64>,
    /// A causal mask (self-attention only).
    #[schema(default = false)]
    pub is_causal: Option<bool>,
    /// The same as is_causal.
    pub causal: Option<bool>,
    /// true: the attention matrix by bmm (counted by FlopCounterMode).
    #[schema(default = false)]
    pub need_weights: Option<bool>,
}

/// `torch.nn.LSTM` / `GRU` on `[L, input_size]`; the output is the module's first result.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"hidden_size": 128, "num_layers": 2}))]
pub struct RecurrentLayer {
    #[schema(minimum = 1)]
    pub input_size: Option<u64>,
    #[schema(minimum = 1)]
    pub hidden_size: u64,
    #[schema(minimum = 1, maximum = 64, default = 1)]
    pub num_layers: Option<u64>,
    #[schema(default = true)]
    pub bias: Option<bool>,
    pub batch_first: Option<bool>,
    #[schema(minimum = 0, maximum = 1)]
    pub dropout: Option<f64>,
    #[schema(default = false)]
    pub bidirectional: Option<bool>,
}

/// `torch.nn.LSTM`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"hidden_size": 64, "bidirectional": true}))]
pub struct LstmLayer {
    #[serde(flatten)]
    pub common: RecurrentLayer,
    /// 0 only.
    #[schema(minimum = 0, maximum = 0)]
    pub proj_size: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Nonlinearity {
    Tanh,
    Relu,
}

/// `torch.nn.RNN`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"hidden_size": 32, "nonlinearity": "relu"}))]
pub struct RnnLayer {
    #[serde(flatten)]
    pub common: RecurrentLayer,
    /// Default tanh.
    pub nonlinearity: Option<Nonlinearity>,
}

/// Channel concatenation of parallel branches (Inception); in a graph node without branches,
/// `torch.cat` of the node's inputs along `dim`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"branches": [[{"type": "conv2d", "out_channels": 8, "kernel_size": 1}], [{"type": "maxpool2d", "kernel_size": 3, "stride": 1, "padding": 1}]]}))]
pub struct ConcatLayer {
    /// Layer lists, each reading the concat's input.
    #[schema(no_recursion)]
    pub branches: Option<Vec<Vec<ModelLayer>>>,
    /// 1 (the channels) with branches; PyTorch's dim (batch axis 0) in a graph.
    #[schema(minimum = -8, maximum = 8, default = 1)]
    pub dim: Option<i64>,
}

/// `body(x) + shortcut(x)` (ResNet); an empty or absent shortcut is the identity. In a graph
/// node, `add` without body and shortcut is the element-wise sum of the node's inputs.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"body": [{"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1}, {"type": "relu"}]}))]
pub struct ResidualLayer {
    #[schema(no_recursion)]
    pub body: Option<Vec<ModelLayer>>,
    #[schema(no_recursion)]
    pub shortcut: Option<Vec<ModelLayer>>,
}

/// `F.scaled_dot_product_attention(q, k, v, is_causal=..., scale=...)`, a graph node reading
/// `[q, k, v]`: `[L, E]`, `[S, E]`, `[S, Ev]`, or batches of them over heads `[H, L, E]`
/// (nanoGPT's flash path); `softmax(q @ k^T * scale) @ v`, `[L, Ev]` (`[H, L, Ev]`).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"is_causal": true}))]
pub struct ScaledDotProductAttentionLayer {
    /// Query i attends to keys 0..=i (PyTorch's top-left `tril` mask).
    #[schema(default = false)]
    pub is_causal: Option<bool>,
    /// Multiplies the scores; null or absent: `1/sqrt(E)`. Finite, not 0.
    pub scale: Option<f64>,
}

/// An op without arguments (`mul`, `matmul`, `causal_mask`).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({}))]
pub struct NoArguments {}

/// A learned tensor (graph form): a class token `[1, D]`, a position embedding `[L, D]`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"shape": [1, 768]}))]
pub struct ParameterLayer {
    /// Without the batch axis, 1 to 3 sizes.
    pub shape: Vec<u64>,
}

/// Every layer op (65), by `type` (PyTorch's module name; case, `_` and `-` are ignored, so
/// `Conv2d`, `conv2d` and `max_pool2d` are spelt as here). Aliases: `cat` for concat,
/// `attention` and `MultiheadAttention` for multihead_attention, `mm` and `bmm` for matmul,
/// `upsampling_nearest2d` for upsample, `batchnorm` for batchnorm2d. `add` is residual in a
/// `layers` list and the sum of a node's inputs in a graph; `mul`, `matmul` and `parameter` are
/// graph nodes only.
#[derive(Serialize, ToSchema)]
#[serde(tag = "type")]
pub enum LayerOp {
    #[serde(rename = "conv1d")]
    Conv1d(Conv1dLayer),
    #[serde(rename = "conv2d")]
    Conv2d(Conv2dLayer),
    #[serde(rename = "conv3d")]
    Conv3d(Conv3dLayer),
    #[serde(rename = "conv_transpose1d")]
    ConvTranspose1d(ConvTranspose1dLayer),
    #[serde(rename = "conv_transpose2d")]
    ConvTranspose2d(ConvTranspose2dLayer),
    #[serde(rename = "conv_transpose3d")]
    ConvTranspose3d(ConvTranspose3dLayer),
    #[serde(rename = "upsample")]
    Upsample(UpsampleLayer),
    #[serde(rename = "linear")]
    Linear(LinearLayer),
    #[serde(rename = "maxpool1d")]
    MaxPool1d(MaxPool1dLayer),
    #[serde(rename = "maxpool2d")]
    MaxPool2d(MaxPool2dLayer),
    #[serde(rename = "maxpool3d")]
    MaxPool3d(MaxPool3dLayer),
    #[serde(rename = "avgpool1d")]
    AvgPool1d(AvgPool1dLayer),
    #[serde(rename = "avgpool2d")]
    AvgPool2d(AvgPool2dLayer),
    #[serde(rename = "avgpool3d")]
    AvgPool3d(AvgPool3dLayer),
    #[serde(rename = "adaptive_avgpool1d")]
    AdaptiveAvgPool1d(AdaptiveAvgPool1dLayer),
    #[serde(rename = "adaptive_avgpool2d")]
    AdaptiveAvgPool2d(AdaptiveAvgPool2dLayer),
    #[serde(rename = "adaptive_avgpool3d")]
    AdaptiveAvgPool3d(AdaptiveAvgPool3dLayer),
    #[serde(rename = "adaptive_maxpool3d")]
    AdaptiveMaxPool3d(AdaptiveMaxPool3dLayer),
    #[serde(rename = "adaptive_maxpool1d")]
    AdaptiveMaxPool1d(AdaptiveMaxPool1dLayer),
    #[serde(rename = "adaptive_maxpool2d")]
    AdaptiveMaxPool2d(AdaptiveMaxPool2dLayer),
    #[serde(rename = "batchnorm1d")]
    BatchNorm1d(BatchNormLayer),
    #[serde(rename = "batchnorm2d")]
    BatchNorm2d(BatchNormLayer),
    #[serde(rename = "batchnorm3d")]
    BatchNorm3d(BatchNormLayer),
    #[serde(rename = "groupnorm")]
    GroupNorm(GroupNormLayer),
    #[serde(rename = "instancenorm2d")]
    InstanceNorm2d(InstanceNormLayer),
    #[serde(rename = "instancenorm3d")]
    InstanceNorm3d(InstanceNormLayer),
    #[serde(rename = "layernorm")]
    LayerNorm(LayerNormLayer),
    /// torchvision's `LayerNorm2d`: over the channels at each position of an image
    /// (normalized_shape = C, an int or `[C]`).
    #[serde(rename = "layernorm2d")]
    LayerNorm2d(LayerNormLayer),
    #[serde(rename = "zeropad1d")]
    ZeroPad1d(Pad1dLayer),
    #[serde(rename = "reflectionpad1d")]
    ReflectionPad1d(Pad1dLayer),
    #[serde(rename = "replicationpad1d")]
    ReplicationPad1d(Pad1dLayer),
    #[serde(rename = "circularpad1d")]
    CircularPad1d(Pad1dLayer),
    #[serde(rename = "zeropad2d")]
    ZeroPad2d(Pad2dLayer),
    #[serde(rename = "reflectionpad2d")]
    ReflectionPad2d(Pad2dLayer),
    #[serde(rename = "replicationpad2d")]
    ReplicationPad2d(Pad2dLayer),
    #[serde(rename = "circularpad2d")]
    CircularPad2d(Pad2dLayer),
    #[serde(rename = "zeropad3d")]
    ZeroPad3d(Pad3dLayer),
    #[serde(rename = "reflectionpad3d")]
    ReflectionPad3d(Pad3dLayer),
    #[serde(rename = "replicationpad3d")]
    ReplicationPad3d(Pad3dLayer),
    #[serde(rename = "circularpad3d")]
    CircularPad3d(Pad3dLayer),
    #[serde(rename = "relu")]
    Relu(ActivationLayer),
    #[serde(rename = "relu6")]
    Relu6(ActivationLayer),
    #[serde(rename = "leaky_relu")]
    LeakyRelu(LeakyReluLayer),
    #[serde(rename = "prelu")]
    Prelu(PreluLayer),
    #[serde(rename = "sigmoid")]
    Sigmoid(ActivationLayer),
    #[serde(rename = "tanh")]
    Tanh(ActivationLayer),
    #[serde(rename = "gelu")]
    Gelu(GeluLayer),
    #[serde(rename = "silu")]
    Silu(ActivationLayer),
    #[serde(rename = "hardswish")]
    Hardswish(ActivationLayer),
    #[serde(rename = "hardsigmoid")]
    Hardsigmoid(ActivationLayer),
    #[serde(rename = "mish")]
    Mish(ActivationLayer),
    #[serde(rename = "identity")]
    Identity(ActivationLayer),
    #[serde(rename = "softmax")]
    Softmax(SoftmaxLayer),
    #[serde(rename = "mean")]
    Mean(MeanLayer),
    #[serde(rename = "dropout")]
    Dropout(DropoutLayer),
    #[serde(rename = "scale")]
    Scale(ScaleLayer),
    /// `x.masked_fill(torch.ones(n, m, dtype=torch.bool).triu(1), float('-inf'))` on the last two
    /// axes `[n, m]`: attention scores masked above the diagonal, written by hand.
    #[serde(rename = "causal_mask")]
    CausalMask(NoArguments),
    #[serde(rename = "flatten")]
    Flatten(FlattenLayer),
    #[serde(rename = "reshape")]
    Reshape(ReshapeLayer),
    #[serde(rename = "view")]
    View(ReshapeLayer),
    #[serde(rename = "unflatten")]
    Unflatten(UnflattenLayer),
    #[serde(rename = "transpose")]
    Transpose(TransposeLayer),
    #[serde(rename = "permute")]
    Permute(PermuteLayer),
    #[serde(rename = "narrow")]
    Narrow(NarrowLayer),
    #[serde(rename = "channel_shuffle")]
    ChannelShuffle(ChannelShuffleLayer),
    #[serde(rename = "select")]
    Select(SelectLayer),
    #[serde(rename = "embedding")]
    Embedding(EmbeddingLayer),
    #[serde(rename = "multihead_attention")]
    MultiheadAttention(MultiheadAttentionLayer),
    #[serde(rename = "lstm")]
    Lstm(LstmLayer),
    #[serde(rename = "gru")]
    Gru(RecurrentLayer),
    #[serde(rename = "rnn")]
    Rnn(RnnLayer),
    #[serde(rename = "concat")]
    Concat(ConcatLayer),
    #[serde(rename = "residual")]
    Residual(ResidualLayer),
    #[serde(rename = "add")]
    Add(ResidualLayer),
    #[serde(rename = "mul")]
    Mul(NoArguments),
    #[serde(rename = "matmul")]
    MatMul(NoArguments),
    #[serde(rename = "scaled_dot_product_attention")]
    ScaledDotProductAttention(ScaledDotProductAttentionLayer),
    #[serde(rename = "parameter")]
    Parameter(ParameterLayer),
}

/// A layer of a `layers` list: its op and arguments, with an optional name (addressed by name or
/// path in every endpoint).
#[derive(Serialize, ToSchema)]
pub struct ModelLayer {
    #[schema(max_length = 200)]
    pub name: Option<String>,
    /// Activations, pools, upsampling and layernorm2d: the model calls torch.nn.functional's form
    /// in forward (only the ptflops profile, which hooks modules, counts it differently).
    #[schema(default = false)]
    pub functional: Option<bool>,
    #[serde(flatten)]
    pub op: LayerOp,
}

/// A node of the graph form.
#[derive(Serialize, ToSchema)]
pub struct GraphNode {
    /// Unique; not "input" (the model's input).
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// The names of the tensors the node reads ("input" is the model's input). Default: the
    /// node listed before, or "input" for the first; none for a parameter.
    pub inputs: Option<Vec<String>>,
    #[schema(default = false)]
    pub functional: Option<bool>,
    #[serde(flatten)]
    pub op: LayerOp,
}

/// The graph form: named nodes in any order, and the tensors the model returns.
#[derive(Serialize, ToSchema)]
pub struct ModelGraph {
    #[schema(min_items = 1)]
    pub nodes: Vec<GraphNode>,
    /// Default: the last node.
    #[schema(min_items = 1)]
    pub outputs: Option<Vec<String>>,
}

/// An int, or a list of exactly `n` ints (`nullable`: an item may be null).
fn int_or_list(n: usize, nullable: bool, description: &str) -> RefOr<Schema> {
    let int = || ObjectBuilder::new().schema_type(SchemaType::Type(Type::Integer)).minimum(Some(0));
    let item = if nullable {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
            .minimum(Some(0))
    } else {
        int()
    };
    OneOfBuilder::new()
        .item(int())
        .item(ArrayBuilder::new().items(item).min_items(Some(n)).max_items(Some(n)))
        .description(Some(description))
        .into()
}

macro_rules! int_or_list {
    ($($t:ty => $n:expr, $nullable:expr, $description:expr;)*) => {$(
        impl PartialSchema for $t {
            fn schema() -> RefOr<Schema> {
                int_or_list($n, $nullable, $description)
            }
        }
        impl ToSchema for $t {}
    )*};
}

int_or_list! {
    Size2 => 2, false, "an int (every axis) or [h, w], as torch.nn takes sizes";
    Size1 => 1, false, "a 1-D layer's size: an int or [l]";
    Size3 => 3, false, "a volume layer's size: an int (every axis) or [d, h, w]";
    AdaptiveSize3 => 3, true, "an int, or [d, h, w] where null keeps that axis's input size";
    Pad2 => 4, false, "an int (every side) or [left, right, top, bottom]";
    Pad1 => 2, false, "an int (both ends) or [left, right]";
    Pad3 => 6, false, "an int (every side) or [left, right, top, bottom, front, back]";
    AdaptiveSize2 => 2, true, "an int, or [h, w] where null keeps that axis's input size";
}

/// A built-in network's name ([`super::presets::NAMES`]).
pub struct PresetName;

impl PartialSchema for PresetName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .enum_values(Some(super::presets::NAMES.iter().copied()))
            .description(Some("a built-in network; GET /v1/presets lists them"))
            .into()
    }
}

impl ToSchema for PresetName {}

impl Serialize for PresetName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputDtype {
    Float32,
    Float,
    Float64,
    /// token ids `[L]`, read only by embeddings
    Int64,
    Long,
}

/// A model in one of five forms: `{preset}`; `{onnx: base64 of an ONNX file}`; `{torchscript:
/// base64 of a torch.jit.save file, input_shape}` (run as it is, for diagnostics and measured
/// receptive fields only); the sequential form `{input_shape, layers}`; or the graph form
/// `{input_shape, graph: {nodes, outputs}}`. An ONNX file is read into the graph form (node
/// names: PyTorch's module names where the node has a `<module>.weight` initializer, else the
/// file's node names) and its initializers are the model's weights for gradient diagnostics
/// (init "model", the default for files). Nodes that cannot be mapped are listed, every one, in
/// one 422 at /model/onnx. Files larger than a JSON body allows (max_body_bytes) are uploaded
/// raw (application/octet-stream). In a graph, "add" and "mul" broadcast as PyTorch does (inputs
/// of one rank; each axis equal or 1) and "concat" takes PyTorch's dim (batch axis 0, default 1,
/// negative from the end). Unknown fields are refused, with the field's JSON pointer.
#[derive(Serialize, ToSchema)]
pub struct Model {
    pub preset: Option<PresetName>,
    /// An ONNX file (opset 7 and later), base64; alone.
    #[schema(format = Byte)]
    pub onnx: Option<String>,
    /// A TorchScript module (torch.jit.save), base64, with input_shape; taken by
    /// /v1/gradient-diagnostics (per named parameter, the module's own weights; the answer has
    /// `parameters` instead of `layers`) and /v1/receptive-field (a measured exact set of one
    /// output unit: position {index, channel}, layer "output" or absent; inputs default all
    /// ones); elsewhere a 422 that says to export ONNX.
    #[schema(format = Byte)]
    pub torchscript: Option<String>,
    /// `[C, H, W]` an image, `[C, D, H, W]` a volume (read by conv3d and the 3-D pools),
    /// `[L, D]` a sequence (`[C, L]` a 1-D signal when a 1-D layer reads it), `[F]` features (or
    /// `[L]` token ids with input_dtype int64); no batch axis.
    #[schema(min_items = 1, max_items = 4)]
    pub input_shape: Option<Vec<u64>>,
    /// Default float32.
    pub input_dtype: Option<InputDtype>,
    /// The sequential form.
    pub layers: Option<Vec<ModelLayer>>,
    pub graph: Option<ModelGraph>,
}
