//! What both binaries share beyond logs and traces: the shutdown signal, and
//! an error's causes on one line.

/// Completes on SIGTERM or Ctrl-C (the server's `serve` and the agent wait on it).
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// An error and its causes on one line ("a: b: c").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// Why a connection failed, in a person's words: the innermost cause ("Connection
/// refused", "failed to lookup address information: …"), not the whole chain of
/// wrappers around it; a TLS client talking to a plain server is said so.
pub fn connection_failure(error: &dyn std::error::Error) -> String {
    let chain = error_chain(error);
    if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
        return "the server does not speak TLS on this port (use http://, or its TLS port)".into();
    }
    let mut innermost = error;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    let text = innermost.to_string();
    // "Connection refused (os error 111)": the errno is for programs.
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(&'static str, Option<Box<Wrapped>>);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn a_connection_failure_is_its_innermost_cause_in_words() {
        let refused = Wrapped(
            "error sending request for url (http://127.0.0.1:1/)",
            Some(Box::new(Wrapped(
                "client error (Connect)",
                Some(Box::new(Wrapped("Connection refused (os error 111)", None))),
            ))),
        );
        assert_eq!(connection_failure(&refused), "Connection refused");
        let tls = Wrapped(
            "error trying to connect",
            Some(Box::new(Wrapped(
                "received corrupt message of type InvalidContentType",
                None,
            ))),
        );
        assert!(connection_failure(&tls).contains("does not speak TLS"));
    }
}
