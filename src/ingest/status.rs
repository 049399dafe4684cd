//! The states of a stored event and the answers a delivery gets.

/// `processing_status` values (the contract's state machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Processing,
    Processed,
    Ignored,
    Failed,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "processing" => Self::Processing,
            "processed" => Self::Processed,
            "ignored" => Self::Ignored,
            "failed" => Self::Failed,
            "dead" => Self::Dead,
            _ => return None,
        })
    }

    /// Nothing more happens to the row on its own (a redelivery is a duplicate).
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Processed | Self::Ignored | Self::Dead)
    }
}

/// What a delivery is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Processed,
    Ignored,
    Duplicate,
    /// Stored, and not applied: a retry is scheduled, or the row is `dead` (attempts ran out,
    /// or the object is invalid) and waits for an operator's replay.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::Duplicate => "duplicate",
            Self::Failed => "failed",
        }
    }
}

/// The outcome of one attempt on one stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub status: Status,
    pub error: Option<String>,
    pub note: Option<String>,
}

impl Attempt {
    pub fn delivery_status(&self) -> DeliveryStatus {
        match self.status {
            Status::Processed => DeliveryStatus::Processed,
            Status::Ignored => DeliveryStatus::Ignored,
            _ => DeliveryStatus::Failed,
        }
    }
}
