//! How a gateway or worker proves who it is to NATS and how the connection is encrypted:
//! one way of authenticating at most (a `.creds` file, an nkey seed, user and password, or a
//! token), and TLS (a CA, a client certificate, required TLS).
//!
//! Credentials in `NATS_URL` (`nats://user:pass@host`, `nats://token@host`) are one of those
//! ways: async-nats 0.42 ignores them, so they are taken out of the URL here and passed as
//! options, and the URL kept in the settings carries no secret (it is logged).

use std::path::{Path, PathBuf};

use secrecy::SecretString;

use crate::parse::Raw;
use crate::{invalid, SettingsError};

/// The identity a process presents to NATS.
#[derive(Debug, Clone, Default)]
pub enum NatsAuth {
    /// No credentials: a server without authorization (development, the test default).
    #[default]
    None,
    /// A `.creds` file holding a user JWT and its nkey seed (decentralized auth, `NATS_CREDS_FILE`).
    CredsFile(PathBuf),
    /// An nkey user seed (`SU…`, `NATS_NKEY_SEED`): the server knows only the public key.
    NkeySeed(SecretString),
    /// `NATS_USER` + `NATS_PASSWORD`, or both in the URL.
    UserPassword {
        user: String,
        password: SecretString,
    },
    /// `NATS_TOKEN`, or a lone user part in the URL (`nats://TOKEN@host`, the NATS convention).
    Token(SecretString),
}

/// A client certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// TLS towards NATS.
#[derive(Debug, Clone, Default)]
pub struct NatsTls {
    /// The only CA (PEM) to trust for the server's certificate, e.g. a private one; `None`:
    /// the system's root certificates.
    pub ca_file: Option<PathBuf>,
    /// For servers that verify clients (`verify: true` in nats-server's `tls` block).
    pub client_cert: Option<ClientCert>,
    /// Refuse to talk to the server in plain text (`NATS_TLS_REQUIRED`, or a `tls://` URL).
    pub required: bool,
}

/// Everything async-nats needs besides the URL; what the bus connects with.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    pub auth: NatsAuth,
    pub tls: NatsTls,
}

/// Every setting of this module: named in the error of one set without `NATS_URL`.
const NATS_ONLY: &[&str] = &[
    "NATS_CREDS_FILE",
    "NATS_NKEY_SEED",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_TOKEN",
    "NATS_TLS_CA_FILE",
    "NATS_TLS_CERT_FILE",
    "NATS_TLS_KEY_FILE",
    "NATS_TLS_REQUIRED",
];

const ONE_WAY: &str = "NATS takes one way of authenticating: set only one of NATS_CREDS_FILE, \
     NATS_NKEY_SEED, NATS_USER + NATS_PASSWORD, NATS_TOKEN, or credentials in NATS_URL";

/// The URL without its credentials, and the options, from the raw settings.
pub(crate) fn load(
    r: &Raw<'_>,
    url: Option<String>,
) -> Result<(Option<String>, NatsOptions), SettingsError> {
    let Some(url) = url else {
        if let Some(name) = NATS_ONLY.iter().copied().find(|n| r.optional(n).is_some()) {
            return Err(invalid(
                name,
                "is set but NATS_URL is not: without NATS_URL nothing connects to NATS",
            ));
        }
        return Ok((None, NatsOptions::default()));
    };
    let (url, from_url) = split_url_credentials(&url)?;
    let mut ways: Vec<(&'static str, NatsAuth)> = Vec::new();
    if let Some(auth) = from_url {
        ways.push(("NATS_URL", auth));
    }
    if let Some(path) = r.optional("NATS_CREDS_FILE") {
        let path = PathBuf::from(path);
        check_creds_file(&path)?;
        ways.push(("NATS_CREDS_FILE", NatsAuth::CredsFile(path)));
    }
    if let Some(seed) = r.optional("NATS_NKEY_SEED") {
        check_user_seed(&seed)?;
        ways.push(("NATS_NKEY_SEED", NatsAuth::NkeySeed(seed.into())));
    }
    match (r.optional("NATS_USER"), r.optional("NATS_PASSWORD")) {
        (Some(user), Some(password)) => ways.push((
            "NATS_USER",
            NatsAuth::UserPassword {
                user,
                password: password.into(),
            },
        )),
        (Some(_), None) => return Err(invalid("NATS_USER", "needs NATS_PASSWORD as well")),
        (None, Some(_)) => return Err(invalid("NATS_PASSWORD", "needs NATS_USER as well")),
        (None, None) => {}
    }
    if let Some(token) = r.optional("NATS_TOKEN") {
        ways.push(("NATS_TOKEN", NatsAuth::Token(token.into())));
    }
    if let [(first, _), (second, _), ..] = ways.as_slice() {
        return Err(invalid(
            first,
            format!("conflicts with {second}. {ONE_WAY}"),
        ));
    }
    let auth = ways.pop().map(|(_, a)| a).unwrap_or_default();
    let tls = load_tls(r, &url)?;
    Ok((Some(url), NatsOptions { auth, tls }))
}

fn load_tls(r: &Raw<'_>, url: &str) -> Result<NatsTls, SettingsError> {
    let tls_url = url.starts_with("tls://");
    let required = match r.optional("NATS_TLS_REQUIRED") {
        None => tls_url,
        Some(_) => {
            let required = r.boolean("NATS_TLS_REQUIRED", false)?;
            if tls_url && !required {
                return Err(invalid(
                    "NATS_TLS_REQUIRED",
                    "is false but NATS_URL is tls://, which always requires TLS",
                ));
            }
            required
        }
    };
    let ca_file = existing_file(r, "NATS_TLS_CA_FILE")?;
    let client_cert = match (
        existing_file(r, "NATS_TLS_CERT_FILE")?,
        existing_file(r, "NATS_TLS_KEY_FILE")?,
    ) {
        (Some(cert_file), Some(key_file)) => Some(ClientCert {
            cert_file,
            key_file,
        }),
        (Some(_), None) => {
            return Err(invalid(
                "NATS_TLS_CERT_FILE",
                "needs NATS_TLS_KEY_FILE (the certificate's private key) as well",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "NATS_TLS_KEY_FILE",
                "needs NATS_TLS_CERT_FILE (the client certificate) as well",
            ))
        }
        (None, None) => None,
    };
    Ok(NatsTls {
        ca_file,
        client_cert,
        required,
    })
}

/// `url` without user and password, and what they stood for: user and password, or a token
/// when only the user part is there.
fn split_url_credentials(url: &str) -> Result<(String, Option<NatsAuth>), SettingsError> {
    let mut parsed =
        url::Url::parse(url).map_err(|e| invalid("NATS_URL", format!("not a URL: {e}")))?;
    let user = decode(parsed.username())?;
    let password = parsed.password().map(decode).transpose()?;
    let auth = match (user.is_empty(), password) {
        (true, None) => return Ok((url.to_string(), None)),
        (true, Some(_)) => {
            return Err(invalid(
                "NATS_URL",
                "has a password but no user name (nats://USER:PASSWORD@host)",
            ))
        }
        (false, None) => NatsAuth::Token(user.into()),
        (false, Some(password)) => NatsAuth::UserPassword {
            user,
            password: password.into(),
        },
    };
    let stripped = parsed
        .set_username("")
        .and_then(|()| parsed.set_password(None));
    if stripped.is_err() {
        return Err(invalid("NATS_URL", "credentials cannot be taken out of it"));
    }
    Ok((parsed.to_string(), Some(auth)))
}

fn decode(part: &str) -> Result<String, SettingsError> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            invalid(
                "NATS_URL",
                "its credentials are not UTF-8 once percent-decoded",
            )
        })
}

fn existing_file(r: &Raw<'_>, name: &'static str) -> Result<Option<PathBuf>, SettingsError> {
    let Some(path) = r.optional(name).map(PathBuf::from) else {
        return Ok(None);
    };
    if !path.is_file() {
        return Err(invalid(
            name,
            format!("{} is not a readable file", path.display()),
        ));
    }
    Ok(Some(path))
}

/// A `.creds` file as `nsc` writes it: a user JWT block and a user nkey seed block. Checked
/// here so a wrong path or file stops the process at start, not at the first reconnect.
fn check_creds_file(path: &Path) -> Result<(), SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        invalid(
            "NATS_CREDS_FILE",
            format!("reading {}: {e}", path.display()),
        )
    })?;
    let jwt = block(&text, "NATS USER JWT");
    let seed = block(&text, "USER NKEY SEED");
    match (jwt, seed) {
        (Some(jwt), Some(seed)) if jwt.split('.').count() == 3 => {
            check_user_seed(seed).map_err(|_| {
                invalid(
                    "NATS_CREDS_FILE",
                    format!("{}: its seed is not a user nkey seed", path.display()),
                )
            })
        }
        _ => Err(invalid(
            "NATS_CREDS_FILE",
            format!(
                "{} is not a NATS .creds file (a NATS USER JWT block and a USER NKEY SEED block)",
                path.display()
            ),
        )),
    }
}

/// The first non-empty line after `-----BEGIN {label}-----`.
fn block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("BEGIN {label}");
    let mut lines = text.lines().skip_while(|l| !l.contains(&begin));
    lines.next()?;
    lines
        .map(str::trim)
        .find(|l| !l.is_empty())
        .filter(|l| !l.starts_with("---"))
}

/// An nkey user seed: 58 base32 characters starting `SU`. Its checksum is verified when the
/// bus connects (by the nkeys crate), this catches a public key or a truncated paste.
fn check_user_seed(seed: &str) -> Result<(), SettingsError> {
    let base32 = seed
        .chars()
        .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c));
    if seed.len() == 58 && seed.starts_with("SU") && base32 {
        Ok(())
    } else {
        Err(invalid(
            "NATS_NKEY_SEED",
            "not an nkey user seed (58 characters starting SU; `nk -gen user` makes one)",
        ))
    }
}

#[cfg(test)]
mod tests;
