//! Pieces shared by the analyses' typed reports.
use crate::spec::Graph;
use serde::Serialize;
use utoipa::ToSchema;

/// The model an answer is about: where it came from and its shapes (no batch axis).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ModelSummary {
    /// The preset's name when the model was `{"preset": NAME}`.
    pub preset: Option<String>,
    /// Where a model read from a file came from (`onnx`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub input_shape: Vec<u64>,
    /// The first output's shape.
    pub output_shape: Vec<u64>,
    /// Every output's shape, in the listed order.
    pub output_shapes: Vec<Vec<u64>>,
}

impl ModelSummary {
    pub fn of(graph: &Graph) -> ModelSummary {
        ModelSummary {
            preset: graph.spec.preset.clone(),
            source: None,
            input_shape: graph.spec.input_shape.clone(),
            output_shape: graph.output().to_vec(),
            output_shapes: graph.output_shapes(),
        }
    }
}

/// `format`: JSON, or an SVG plot (as `Accept: image/svg+xml` asks).
#[derive(Debug, Clone, Copy, serde::Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Json,
    Svg,
}

impl ImageFormat {
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Json => "json",
            ImageFormat::Svg => "svg",
        }
    }
}

/// An inclusive `[first, last]` pair of positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Vec<i64>)]
pub struct Inclusive(pub [i64; 2]);

/// The schema of a request's `model`: [`crate::spec::ops::Model`], generated from the model
/// language's typed wire form.
pub fn model_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::Ref::from_schema_name("Model").into()
}
