//! Placeholder for the stream manager (being written on its own branch).
#![allow(dead_code, unused_variables)]

use std::sync::Arc;

use async_nats::jetstream::{self, Context};

use crate::{JetStreamOptions, TopicOptions, TransportError};

pub(crate) fn stream_name(topic: &str, options: Option<&TopicOptions>) -> String {
    if let Some(s) = options.and_then(|o| o.stream.clone()) {
        return s;
    }
    let mut out = String::with_capacity(topic.len());
    for c in topic.chars() {
        match c {
            '-' => out.push_str("--"),
            '_' => out.push_str("-_"),
            '.' => out.push('_'),
            c => out.push(c),
        }
    }
    out
}

pub(crate) struct Streams {
    js: Context,
}

impl Streams {
    pub(crate) fn new(js: Context, options: &JetStreamOptions) -> Self {
        Self { js }
    }
    pub(crate) async fn ensure(
        &self,
        topic: &str,
        options: &TopicOptions,
    ) -> Result<Arc<str>, TransportError> {
        let name = stream_name(topic, Some(options));
        self.js
            .get_or_create_stream(jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![topic.to_owned()],
                ..Default::default()
            })
            .await
            .map_err(|e| TransportError::new("nats", "stream", Some(e.into())))?;
        Ok(Arc::from(name))
    }
    pub(crate) fn forget(&self, topic: &str) {}
    pub(crate) async fn read(
        &self,
        topic: &str,
        options: Option<&TopicOptions>,
    ) -> Result<Option<TopicOptions>, TransportError> {
        Ok(None)
    }
    pub(crate) async fn list(
        &self,
        overrides: &[(String, TopicOptions)],
    ) -> Result<Vec<String>, TransportError> {
        Ok(Vec::new())
    }
    pub(crate) async fn remove(
        &self,
        topic: &str,
        options: Option<&TopicOptions>,
    ) -> Result<bool, TransportError> {
        Ok(false)
    }
    pub(crate) fn create_calls(&self) -> u64 {
        0
    }
}
