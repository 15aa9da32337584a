//! CSRF protection of the dashboard's forms: a double-submit token.
//!
//! Each page sets (or keeps) a random token in a cookie that is
//! `HttpOnly`, `SameSite=Strict` and scoped to the dashboard's path, and
//! writes the same token into its forms. An action is accepted only when
//! the form's token equals the cookie's: another site can make a browser
//! send the form, but can neither read the token nor make the browser send
//! a `SameSite=Strict` cookie with a cross-site request. A request whose
//! `Origin` header is another origin is refused as well (see
//! [`super::host`]).

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite};

use super::{Ctx, WebError};

/// Cookie holding the token.
pub(crate) const COOKIE: &str = "bgtasks_csrf";

/// Random bytes per token (hex-encoded: twice as many characters).
const TOKEN_BYTES: usize = 32;

/// The request's token if it has a well-formed one, else a new one (to be
/// set with [`cookie`]).
pub(crate) fn token(req: &HttpRequest) -> Result<(String, bool), WebError> {
    if let Some(cookie) = req.cookie(COOKIE)
        && well_formed(cookie.value())
    {
        return Ok((cookie.value().to_owned(), false));
    }
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|err| {
        WebError::internal(format!(
            "the system's random number generator failed ({err}); try again"
        ))
    })?;
    Ok((hex(&bytes), true))
}

/// The cookie carrying `token`, for the pages of `ctx`'s dashboard.
pub(crate) fn cookie(ctx: &Ctx, token: &str) -> Cookie<'static> {
    Cookie::build(COOKIE, token.to_owned())
        .path(ctx.base.clone())
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(ctx.is_https())
        .finish()
}

/// Accepts a form post: same-origin (when the browser says), and the form's
/// token equal to the cookie's.
pub(crate) fn check(
    ctx: &Ctx,
    req: &HttpRequest,
    form_token: Option<&str>,
) -> Result<(), WebError> {
    ctx.check_origin(req)?;
    let refused = || {
        WebError::forbidden(
            "the form's security token is missing or out of date (CSRF check failed): \
             reload the page and try again",
        )
    };
    let cookie = req.cookie(COOKIE).ok_or_else(refused)?;
    let form_token = form_token.ok_or_else(refused)?;
    if well_formed(cookie.value()) && constant_time_eq(cookie.value(), form_token) {
        Ok(())
    } else {
        Err(refused())
    }
}

fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_BYTES * 2 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without stopping at the first difference, so the time taken
/// says nothing about how much of a guess was right.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
        assert!(well_formed(&"a1".repeat(TOKEN_BYTES)));
        assert!(!well_formed("a1"));
        assert!(!well_formed(&"zz".repeat(TOKEN_BYTES)));
    }
}
