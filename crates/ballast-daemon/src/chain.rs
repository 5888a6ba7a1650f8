//! One line of text for an error and all its sources (`error: cause: cause`), for logs
//! and error bodies: libvirt, reqwest and I/O errors keep the useful part (connection
//! refused, the file) in their sources.

/// The error and its `source()` chain, `: `-separated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_is_on_the_line() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let outer = std::io::Error::other(Wrapped(inner));
        assert_eq!(error_chain(&outer), "connecting: refused");
    }

    #[test]
    fn an_error_without_causes_is_its_own_text() {
        let error = std::io::Error::other("disk full");
        assert_eq!(error_chain(&error), "disk full");
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("connecting")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
