//! `Headers`: a bus message's metadata (a frame's receive time, an event's id, an audio
//! segment's bounds), as the bus carries it between tasks of one process. NATS's own
//! `HeaderMap` is a hash map of vectors: building, cloning and reading one cost the in-process
//! bus more than the rest of a frame's routing, for the one to six pairs a message carries, so
//! it is made only at the NATS connection's edge ([`Headers::to_nats`], [`Headers::from_nats`]).
//! Shared, not copied, between the subscribers a message reaches: set once by its publisher,
//! then only read.
//!
//! The pairs and their values (numbers, ids, subjects) sit inline in the one shared
//! allocation: a frame's headers are made on the thread that read the socket and first read
//! on the consumer's, and a chain of separate allocations (a list, then each value) cost that
//! thread a cache miss per link.

use std::borrow::Cow;
use std::sync::Arc;

use compact_str::CompactString;
use smallvec::SmallVec;

/// A header's value: up to 24 bytes inline, longer ones on the heap.
pub type HeaderValue = CompactString;

type Pairs = SmallVec<[(Cow<'static, str>, HeaderValue); 2]>;

/// Name/value pairs in the order they were set; a name is set at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Arc<Pairs>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`, replacing what it held.
    pub fn insert(&mut self, name: impl Into<Cow<'static, str>>, value: impl Into<HeaderValue>) {
        let (name, value) = (name.into(), value.into());
        let pairs = Arc::make_mut(&mut self.0);
        match pairs.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => pairs.push((name, value)),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_ref(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// As NATS sends them.
    pub fn to_nats(&self) -> async_nats::HeaderMap {
        let mut map = async_nats::HeaderMap::new();
        for (name, value) in self.0.iter() {
            let name = match name {
                // a static name is kept as it is, not parsed and copied
                Cow::Borrowed(n) => async_nats::header::HeaderName::from_static(n),
                Cow::Owned(n) => match n.parse() {
                    Ok(n) => n,
                    // owned names came from NATS or from this code, valid either way
                    Err(_) => continue,
                },
            };
            map.insert(name, value.as_str());
        }
        map
    }

    /// As a NATS message brought them: the first value of each name (a name set twice is
    /// untrusted input the bus does not pass on).
    pub fn from_nats(map: &async_nats::HeaderMap) -> Self {
        Self(Arc::new(
            map.iter()
                .filter_map(|(name, values)| {
                    let name: &str = name.as_ref();
                    let value = values.first()?;
                    Some((
                        Cow::Owned(name.to_string()),
                        HeaderValue::from(value.as_str()),
                    ))
                })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_set_once_and_read_back() {
        let mut h = crate::header_map([("A-One", "1".to_string())]);
        h.insert("A-Two", "2");
        h.insert("A-One", "3");
        assert_eq!(h.get("A-One"), Some("3"));
        assert_eq!(h.get("A-Two"), Some("2"));
        assert_eq!(h.get("A-Three"), None);
        assert_eq!(h.iter().count(), 2);
        // a copy shares the pairs until one of them is set
        let mut copy = h.clone();
        copy.insert("A-Two", "4");
        assert_eq!((h.get("A-Two"), copy.get("A-Two")), (Some("2"), Some("4")));
    }

    #[test]
    fn headers_survive_the_trip_through_nats_headers() {
        let mut h = Headers::new();
        h.insert("Inside-Event-Id", "42");
        h.insert(String::from("Content-Type"), "audio/wav");
        let back = Headers::from_nats(&h.to_nats());
        assert_eq!(back.get("Inside-Event-Id"), Some("42"));
        assert_eq!(back.get("Content-Type"), Some("audio/wav"));
        assert_eq!(back.iter().count(), 2);
    }
}
