//! One error type for everything a request can get wrong, carrying the JSON pointer of the
//! offending field. The HTTP layer turns it into `application/problem+json`.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is well-formed JSON but asks for something invalid (422).
    Invalid,
    /// The request is valid but larger than a configured limit (413).
    TooLarge,
    /// Asks for something this server cannot provide, e.g. CUDA without a GPU (422 with
    /// a distinct title).
    Unavailable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    pub kind: ErrorKind,
    /// RFC 6901 pointer into the request body, e.g. `/model/layers/3/kernel_size`.
    pub pointer: String,
    pub message: String,
    /// For `TooLarge`: the name of the limit and its value.
    pub limit: Option<(String, u64)>,
}

impl SpecError {
    pub fn invalid(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            kind: ErrorKind::Invalid,
            pointer: pointer.into(),
            message: message.into(),
            limit: None,
        }
    }

    pub fn too_large(pointer: impl Into<String>, limit: &str, value: u64, message: impl Into<String>) -> Self {
        SpecError {
            kind: ErrorKind::TooLarge,
            pointer: pointer.into(),
            message: message.into(),
            limit: Some((limit.to_string(), value)),
        }
    }

    pub fn unavailable(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError {
            kind: ErrorKind::Unavailable,
            pointer: pointer.into(),
            message: message.into(),
            limit: None,
        }
    }

    /// Re-roots the pointer under a prefix (a spec parsed on its own, then embedded in a request).
    pub fn under(mut self, prefix: &str) -> Self {
        self.pointer = format!("{prefix}{}", self.pointer);
        self
    }
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", if self.pointer.is_empty() { "/" } else { &self.pointer }, self.message)
    }
}

impl std::error::Error for SpecError {}

pub type SpecResult<T> = Result<T, SpecError>;

/// Appends one reference token to a JSON pointer, escaping `~` and `/` as RFC 6901 says.
pub fn child(pointer: &str, token: impl std::fmt::Display) -> String {
    let token = token.to_string().replace('~', "~0").replace('/', "~1");
    format!("{pointer}/{token}")
}
