//! Optional API keys and a per-key rate limit for the `/v1` routes. Health, readiness, metrics
//! and the OpenAPI document stay open so that probes and scrapers need no secret.
use super::error::ApiError;
use super::AppState;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Compares without an early exit, so the time taken does not tell how much of a key matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// A token bucket per key: `per_minute` tokens a minute, at most `burst` saved up.
pub struct RateLimiter {
    per_minute: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u64, burst: u64) -> RateLimiter {
        RateLimiter {
            per_minute: per_minute as f64,
            burst: burst.max(1) as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Ok, or the seconds to wait for the next token.
    pub fn take(&self, key: &str) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_minute / 60.0).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) * 60.0 / self.per_minute).ceil().max(1.0) as u64)
        }
    }
}

/// The refusal for a `/v1` request without a valid key or over its rate limit; None lets it through.
pub fn check(state: &AppState, req: &Request) -> Option<Response> {
    if !req.uri().path().starts_with("/v1/") {
        return None;
    }
    let keys = &state.config.api_keys;
    let mut who = "anonymous".to_string();
    if !keys.is_empty() {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let matched = presented.and_then(|p| {
            keys.iter().enumerate().fold(None, |found, (i, k)| {
                if constant_time_eq(p.as_bytes(), k.as_bytes()) {
                    Some(i)
                } else {
                    found
                }
            })
        });
        match matched {
            Some(i) => who = format!("key{i}"),
            None => {
                let mut resp = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "this server needs an API key: send Authorization: Bearer <key>",
                )
                .into_response();
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
                return Some(resp);
            }
        }
    }
    if let Some(limiter) = &state.limiter {
        if let Err(wait) = limiter.take(&who) {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                format!(
                    "the rate limit of {} requests a minute is used up; retry after {wait} s",
                    state.config.rate_limit_per_minute
                ),
            );
            e.retry_after = Some(wait);
            e.limit = Some(("rate_limit_per_minute".into(), state.config.rate_limit_per_minute));
            return Some(e.into_response());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_in_full() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn bucket_allows_a_burst_then_waits() {
        let l = RateLimiter::new(60, 3);
        assert!(l.take("a").is_ok() && l.take("a").is_ok() && l.take("a").is_ok());
        assert_eq!(l.take("a"), Err(1));
        assert!(l.take("b").is_ok(), "keys have their own buckets");
    }
}
