//! The envelope of a QMP or guest-agent JSON reply, `{"return": ..}` or
//! `{"error": {"class": .., "desc": ..}}`, read once for both backends (the libvirt
//! guest-agent calls and the shared guest-exec protocol).

use serde::Deserialize;

/// The `error` member of a reply.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub(crate) class: String,
    #[serde(default)]
    pub(crate) desc: String,
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(rename = "return")]
    value: Option<T>,
    error: Option<ErrorBody>,
}

/// A reply's value, or the error the other side answered; `Ok(None)` when the reply
/// has neither (a `return` wins over an `error`). Strings borrow from `text`.
pub(crate) fn parse<'a, T: Deserialize<'a>>(
    text: &'a str,
) -> Result<Option<Result<T, ErrorBody>>, serde_json::Error> {
    let envelope: Envelope<T> = serde_json::from_str(text)?;
    Ok(match (envelope.value, envelope.error) {
        (Some(value), _) => Some(Ok(value)),
        (None, Some(error)) => Some(Err(error)),
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_return_an_error_and_neither_are_told_apart() {
        let value = parse::<i64>(r#"{"return": 7}"#)
            .ok()
            .flatten()
            .map(|r| r.ok());
        assert_eq!(value, Some(Some(7)));
        let error = parse::<i64>(r#"{"error": {"class": "GenericError", "desc": "no"}}"#)
            .ok()
            .flatten()
            .and_then(|reply| reply.err())
            .map(|error| (error.class, error.desc));
        assert_eq!(error, Some(("GenericError".to_owned(), "no".to_owned())));
        assert!(matches!(parse::<i64>("{}"), Ok(None)));
        assert!(parse::<i64>("not json").is_err());
    }
}
