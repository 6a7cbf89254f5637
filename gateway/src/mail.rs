//! Invitation email: SendGrid's v3 HTTP API when `SENDGRID_API_KEY` is set,
//! else the email is logged (the embedded default needs no mail service).

use inside_settings::{ExposeSecret, SecretString, Settings};
use serde_json::json;

/// An invitation to `to`. The inviter's name is user text: it is stripped of
/// control characters wherever it becomes part of a header (the subject) and
/// HTML-escaped in the HTML part, so a name cannot add headers or markup
/// (names with control characters are refused at signup; accounts from
/// before that rule are still made safe here).
#[derive(Debug, Clone)]
pub struct Invitation {
    /// For the logs, which never carry the address or the name.
    pub relationship_id: uuid::Uuid,
    pub to: String,
    pub inviter_name: String,
    pub relationship_kind: String,
}

impl Invitation {
    pub fn subject(&self) -> String {
        format!("{} invited you to Inside", one_line(&self.inviter_name))
    }

    pub fn text(&self) -> String {
        format!(
            "{} would like to practise better conversations with you on Inside ({} relationship). \
             Sign up with this email address ({}) to join them.",
            one_line(&self.inviter_name),
            self.relationship_kind,
            one_line(&self.to)
        )
    }

    pub fn html(&self) -> String {
        format!(
            "<p><strong>{}</strong> would like to practise better conversations with you on Inside \
             ({} relationship).</p><p>Sign up with this email address ({}) to join them.</p>",
            escape_html(&one_line(&self.inviter_name)),
            escape_html(&self.relationship_kind),
            escape_html(&one_line(&self.to))
        )
    }
}

/// Control characters (CR and LF above all) replaced by spaces: the text can
/// then sit in a header without starting a new one.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The five characters that change the meaning of HTML text or attributes.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// Why an invitation email did not go out.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("building the SendGrid client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("reaching SendGrid: {0}")]
    Transport(#[source] reqwest::Error),
    // SendGrid's error body may quote the request (addresses, names): the status only
    #[error("SendGrid answered {0}")]
    Refused(reqwest::StatusCode),
}

#[async_trait::async_trait]
pub trait Mailer: Send + Sync {
    async fn send_invitation(&self, invitation: &Invitation) -> Result<(), MailError>;
}

/// Writes the email to the log instead of sending it.
pub struct LogMailer;

#[async_trait::async_trait]
impl Mailer for LogMailer {
    async fn send_invitation(&self, inv: &Invitation) -> Result<(), MailError> {
        // Neither the address nor the inviter's name: the relationship id finds them.
        tracing::info!(relationship = %inv.relationship_id, "invitation email (SENDGRID_API_KEY not set, not sent)");
        Ok(())
    }
}

pub struct SendGridMailer {
    client: reqwest::Client,
    url: String,
    key: SecretString,
    from_address: String,
    from_name: String,
}

impl SendGridMailer {
    pub fn new(settings: &Settings, key: SecretString) -> Result<Self, MailError> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(MailError::Client)?,
            url: settings.sendgrid_api_url.clone(),
            key,
            from_address: settings.email_from_address.clone(),
            from_name: settings.email_from_name.clone(),
        })
    }
}

#[async_trait::async_trait]
impl Mailer for SendGridMailer {
    async fn send_invitation(&self, inv: &Invitation) -> Result<(), MailError> {
        let body = json!({
            "personalizations": [{"to": [{"email": inv.to}]}],
            "from": {"email": self.from_address, "name": self.from_name},
            "subject": inv.subject(),
            "content": [
                {"type": "text/plain", "value": inv.text()},
                {"type": "text/html", "value": inv.html()},
            ],
        });
        let res = self
            .client
            .post(&self.url)
            .bearer_auth(self.key.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(MailError::Transport)?;
        let status = res.status();
        if !status.is_success() {
            return Err(MailError::Refused(status));
        }
        tracing::info!(relationship = %inv.relationship_id, "invitation email sent");
        Ok(())
    }
}

/// The mailer the settings ask for.
pub fn from_settings(settings: &Settings) -> Result<std::sync::Arc<dyn Mailer>, MailError> {
    Ok(match &settings.sendgrid_api_key {
        Some(key) => std::sync::Arc::new(SendGridMailer::new(settings, key.clone())?),
        None => std::sync::Arc::new(LogMailer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invitation(name: &str) -> Invitation {
        Invitation {
            relationship_id: uuid::Uuid::nil(),
            to: "b@example.com".into(),
            inviter_name: name.into(),
            relationship_kind: "friends".into(),
        }
    }

    #[test]
    fn a_name_cannot_break_the_subject_into_headers() {
        let inv = invitation("Eve\r\nBcc: victim@example.com");
        let subject = inv.subject();
        assert!(
            !subject.contains('\r') && !subject.contains('\n'),
            "{subject:?}"
        );
    }

    #[test]
    fn a_name_is_escaped_in_the_html_part() {
        let html = invitation("<a href=\"https://evil\">Eve</a> & co").html();
        assert!(!html.contains("<a href"), "{html}");
        assert!(html.contains("&lt;a href=&quot;https://evil&quot;&gt;Eve&lt;/a&gt; &amp; co"));
    }
}
