//! `GET /v1/presets`: the built-in networks with their full specs.
use super::error::{ApiError, Problem, ReadProblems};
use super::json_response;
use crate::spec::presets;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A built-in network.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preset {
    #[schema(value_type = PresetName)]
    pub name: &'static str,
    pub description: &'static str,
    /// The network in the model language (what `{"preset": NAME}` stands for).
    #[schema(schema_with = super::report::model_schema)]
    pub spec: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PresetList {
    pub presets: Vec<Preset>,
}

/// A preset's name: the schema's enum is the list the service has (it cannot fall behind it).
pub struct PresetName;

impl utoipa::PartialSchema for PresetName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(presets::NAMES.iter().copied()))
            .into()
    }
}

impl ToSchema for PresetName {}

fn entry(name: &'static str) -> Preset {
    Preset {
        name,
        description: presets::describe(name),
        spec: presets::get(name).expect("listed preset exists"),
    }
}

/// The built-in networks with their full specs.
#[utoipa::path(
    get,
    path = "/v1/presets",
    operation_id = "presets",
    tag = "models",
    responses(
        (status = 200, description = "presets", body = PresetList),
        ReadProblems,
    )
)]
pub async fn list() -> Response {
    json_response(&PresetList {
        presets: presets::NAMES.iter().map(|n| entry(n)).collect(),
    })
}

/// One preset.
#[utoipa::path(
    get,
    path = "/v1/presets/{name}",
    operation_id = "preset",
    tag = "models",
    params(("name" = PresetName, Path, description = "the preset's name")),
    responses(
        (status = 200, description = "the preset", body = Preset),
        (status = 404, response = Problem),
        ReadProblems,
    )
)]
pub async fn one(Path(name): Path<String>) -> Result<Response, ApiError> {
    match presets::NAMES.iter().find(|n| **n == name) {
        Some(n) => Ok(json_response(&entry(n))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Unknown preset",
            format!("no preset {name:?}; known: {}", presets::NAMES.join(", ")),
        )),
    }
}
