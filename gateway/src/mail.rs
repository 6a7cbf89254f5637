//! Invitation email: SendGrid's v3 HTTP API when `SENDGRID_API_KEY` is set,
//! else the email is logged (the embedded default needs no mail service).

use inside_settings::{ExposeSecret, SecretString, Settings};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct Invitation {
    pub to: String,
    pub inviter_name: String,
    pub relationship_kind: String,
}

impl Invitation {
    fn subject(&self) -> String {
        format!("{} invited you to Inside", self.inviter_name)
    }

    fn text(&self) -> String {
        format!(
            "{} would like to practise better conversations with you on Inside ({} relationship). \
             Sign up with this email address ({}) to join them.",
            self.inviter_name, self.relationship_kind, self.to
        )
    }
}

#[async_trait::async_trait]
pub trait Mailer: Send + Sync {
    async fn send_invitation(&self, invitation: &Invitation) -> anyhow::Result<()>;
}

/// Writes the email to the log instead of sending it.
pub struct LogMailer;

#[async_trait::async_trait]
impl Mailer for LogMailer {
    async fn send_invitation(&self, inv: &Invitation) -> anyhow::Result<()> {
        tracing::info!(to = %inv.to, subject = %inv.subject(), "invitation email (SENDGRID_API_KEY not set, not sent)");
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
    pub fn new(settings: &Settings, key: SecretString) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()?,
            url: settings.sendgrid_api_url.clone(),
            key,
            from_address: settings.email_from_address.clone(),
            from_name: settings.email_from_name.clone(),
        })
    }
}

#[async_trait::async_trait]
impl Mailer for SendGridMailer {
    async fn send_invitation(&self, inv: &Invitation) -> anyhow::Result<()> {
        let body = json!({
            "personalizations": [{"to": [{"email": inv.to}]}],
            "from": {"email": self.from_address, "name": self.from_name},
            "subject": inv.subject(),
            "content": [{"type": "text/plain", "value": inv.text()}],
        });
        let res = self
            .client
            .post(&self.url)
            .bearer_auth(self.key.expose_secret())
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        if !status.is_success() {
            let text = res.text().await.unwrap_or_default();
            anyhow::bail!("SendGrid answered {status}: {text}");
        }
        tracing::info!(to = %inv.to, "invitation email sent");
        Ok(())
    }
}

/// The mailer the settings ask for.
pub fn from_settings(settings: &Settings) -> anyhow::Result<std::sync::Arc<dyn Mailer>> {
    Ok(match &settings.sendgrid_api_key {
        Some(key) => std::sync::Arc::new(SendGridMailer::new(settings, key.clone())?),
        None => std::sync::Arc::new(LogMailer),
    })
}
