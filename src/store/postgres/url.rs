//! Database URLs as they may be shown: the password is a secret, so every message, log
//! line and error that names a PostgreSQL URL names it through [`redact_url`].

/// The URL with its password (in the user info or a `password=` query parameter)
/// replaced by `***`. Text that is not a URL is returned without any `password=` value.
pub fn redact_url(url: &str) -> String {
    let (head, query_opt) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut redacted = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(slash) => rest.split_at(slash),
                None => (rest, ""),
            };
            let authority = match authority.rsplit_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _password)) => format!("{user}:***@{host}"),
                    None => format!("{user_info}@{host}"),
                },
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => redact_key_values(head),
    };
    if let Some(query) = query_opt {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => param.to_string(),
            })
            .collect();
        redacted.push('?');
        redacted.push_str(&params.join("&"));
    }
    redacted
}

/// `key=value` connection strings (`host=db password=x`): the password's value hidden.
fn redact_key_values(text: &str) -> String {
    text.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `url` names PostgreSQL (`postgres://` or `postgresql://`), the only URLs the
/// store takes.
pub fn is_postgres_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// `url` with its database (the path) replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (head, query_opt) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let base = match head.split_once("://") {
        Some((scheme, rest)) => match rest.find('/') {
            Some(slash) => format!("{scheme}://{}/{database}", &rest[..slash]),
            None => format!("{scheme}://{rest}/{database}"),
        },
        None => format!("{head} dbname={database}"),
    };
    match query_opt {
        Some(query) => format!("{base}?{query}"),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        for (url, expected) in [
            (
                "postgres://ms:s3cret@db.example:5432/marketsync",
                "postgres://ms:***@db.example:5432/marketsync",
            ),
            (
                "postgresql://ms:p%40ss@db/ms?sslmode=disable&password=other",
                "postgresql://ms:***@db/ms?sslmode=disable&password=***",
            ),
            (
                "postgres://postgres@127.0.0.1/x",
                "postgres://postgres@127.0.0.1/x",
            ),
            ("postgres://127.0.0.1", "postgres://127.0.0.1"),
            (
                "host=db password=s3cret user=ms",
                "host=db password=*** user=ms",
            ),
        ] {
            let redacted = redact_url(url);
            assert_eq!(redacted, expected);
            assert!(!redacted.contains("s3cret"), "{redacted}");
        }
    }

    #[test]
    fn only_postgres_schemes_are_postgres_urls() {
        assert!(is_postgres_url("postgres://h/db"));
        assert!(is_postgres_url("PostgreSQL://h/db"));
        assert!(!is_postgres_url("mysql://h/db"));
        assert!(!is_postgres_url("sqlite:/var/lib/ms.db"));
    }
}
