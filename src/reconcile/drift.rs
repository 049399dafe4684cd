//! What `reconcile` finds: one `Drift` per object whose recorded state differs from what
//! Stripe shows, with the fields that differ and the snapshot a repair ingests.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Customer,
    Subscription,
    Invoice,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Subscription => "subscription",
            Self::Invoice => "invoice",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// Stripe has it; the database has no row for it.
    Missing,
    /// Recorded with values other than Stripe shows (`fields`).
    Differs,
    /// Stripe shows the invoice paid, the entitlement rules give it a grant, and there is none.
    PaidInvoiceWithoutGrant,
    /// A grant stands for an invoice Stripe does not show paid.
    GrantWithoutPaidInvoice,
    /// Stripe deleted the customer; the database still lists it.
    DeletedInStripe,
    /// The database has it and Stripe does not know it: no snapshot to repair it from.
    UnknownToStripe,
}

impl DriftKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Differs => "differs",
            Self::PaidInvoiceWithoutGrant => "paid invoice without a grant",
            Self::GrantWithoutPaidInvoice => "grant without a paid invoice",
            Self::DeletedInStripe => "deleted in Stripe",
            Self::UnknownToStripe => "unknown to Stripe",
        }
    }
}

/// One field as the database records it and as Stripe shows it (`None`: empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldDiff {
    pub field: &'static str,
    pub database: Option<String>,
    pub stripe: Option<String>,
}

/// The object as Stripe showed it, byte for byte, and when.
#[derive(Debug, Clone)]
pub struct Seen {
    pub raw: Box<RawValue>,
    /// When the request that returned it was sent: a repair's event is `created` then, so a
    /// real event about a later change still wins over it.
    pub at: DateTime<Utc>,
    /// A deleted customer (`{"id": …, "deleted": true}`).
    pub deleted: bool,
}

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repair {
    /// The synthetic event recorded in `stripe_webhook_events`.
    pub event_id: String,
    pub event_type: String,
    /// How the pipeline answered it (processed, ignored, failed, duplicate).
    pub status: String,
    /// The object compared again afterwards shows no drift.
    pub fixed: bool,
    /// What is still different when not fixed.
    pub remaining: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    pub object: ObjectKind,
    pub id: String,
    pub kind: DriftKind,
    pub fields: Vec<FieldDiff>,
    /// A short explanation for the table.
    pub detail: String,
    #[serde(skip)]
    pub seen: Option<Seen>,
    pub repair: Option<Repair>,
}

impl Drift {
    pub fn new(object: ObjectKind, id: &str, kind: DriftKind, seen: Option<Seen>) -> Self {
        Self {
            object,
            id: id.to_owned(),
            kind,
            fields: Vec::new(),
            detail: String::new(),
            seen,
            repair: None,
        }
    }

    pub fn with_fields(mut self, fields: Vec<FieldDiff>) -> Self {
        self.fields = fields;
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Whether ingesting what Stripe shows can repair it.
    pub fn repairable(&self) -> bool {
        self.seen.is_some() && self.kind != DriftKind::UnknownToStripe
    }

    pub fn is_fixed(&self) -> bool {
        self.repair.as_ref().is_some_and(|r| r.fixed)
    }

    /// `detail`, or the fields as `field: database X, Stripe Y`.
    pub fn description(&self) -> String {
        let fields: Vec<String> = self
            .fields
            .iter()
            .map(|f| {
                format!(
                    "{}: database {}, Stripe {}",
                    f.field,
                    f.database.as_deref().unwrap_or("(none)"),
                    f.stripe.as_deref().unwrap_or("(none)")
                )
            })
            .collect();
        match (self.detail.is_empty(), fields.is_empty()) {
            (false, true) => self.detail.clone(),
            (true, _) => fields.join("; "),
            (false, false) => format!("{}; {}", self.detail, fields.join("; ")),
        }
    }
}

/// Collects differing fields.
#[derive(Default)]
pub struct Fields(Vec<FieldDiff>);

impl Fields {
    pub fn compare<T: PartialEq + ToString>(
        &mut self,
        field: &'static str,
        database: Option<T>,
        stripe: Option<T>,
    ) {
        if database != stripe {
            self.0.push(FieldDiff {
                field,
                database: database.map(|v| v.to_string()),
                stripe: stripe.map(|v| v.to_string()),
            });
        }
    }

    /// Compares instants to the second (Stripe's precision).
    pub fn compare_time(
        &mut self,
        field: &'static str,
        database: Option<DateTime<Utc>>,
        stripe: Option<DateTime<Utc>>,
    ) {
        let text = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        if database.map(|t| t.timestamp()) != stripe.map(|t| t.timestamp()) {
            self.0.push(FieldDiff {
                field,
                database: database.map(text),
                stripe: stripe.map(text),
            });
        }
    }

    pub fn into_vec(self) -> Vec<FieldDiff> {
        self.0
    }
}
