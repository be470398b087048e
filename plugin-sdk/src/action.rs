//! What a plugin decides for an event.

use serde::Serialize;

use crate::Result;

/// The outcome of [`crate::Plugin::transform`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Deliver this request instead of the event envelope.
    Deliver(Request),
    /// Deliver the event envelope unchanged.
    Pass,
    /// Deliver nothing; the reason is recorded on the delivery as `filtered`.
    Skip(String),
}

impl Action {
    /// Deliver `value` serialized as JSON.
    pub fn deliver_json<T: Serialize + ?Sized>(value: &T) -> Result<Action> {
        Ok(Action::Deliver(Request::json(value)?))
    }

    /// Deliver a prepared request.
    pub fn deliver(request: Request) -> Action {
        Action::Deliver(request)
    }

    /// Deliver nothing, for this reason.
    pub fn skip(reason: impl Into<String>) -> Action {
        Action::Skip(reason.into())
    }
}

/// A body to send plus extra headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Extra headers. `content-type` replaces the default `application/json`; `webhook-*`,
    /// `content-length`, `host` and `user-agent` are reserved by the host.
    pub headers: Vec<(String, String)>,
    /// The exact bytes to send.
    pub body: Vec<u8>,
}

impl Request {
    /// A request whose body is `value` as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Request> {
        Ok(Request { headers: Vec::new(), body: serde_json::to_vec(value)? })
    }

    /// A request with this raw body; add a `content-type` header unless it is JSON.
    pub fn bytes(body: impl Into<Vec<u8>>) -> Request {
        Request { headers: Vec::new(), body: body.into() }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl From<Request> for Action {
    fn from(request: Request) -> Action {
        Action::Deliver(request)
    }
}
