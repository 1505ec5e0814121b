//! Server-Sent Events from SMS (`spear logs`, `spear run`).

/// One Server-Sent Event.
#[derive(Debug, Default)]
pub(crate) struct SseEvent {
    /// The `event:` field.
    pub event: String,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

/// Reads events from an SSE response.
pub(crate) struct SseReader {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl SseReader {
    /// Read events from `response`.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event; `None` when the stream ended.
    pub async fn next(&mut self) -> std::result::Result<Option<SseEvent>, reqwest::Error> {
        let mut event = SseEvent::default();
        loop {
            while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if !event.data.is_empty() || !event.event.is_empty() {
                        return Ok(Some(event));
                    }
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event.event = value.to_owned(),
                    "data" => {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                    }
                    _ => {} // `id` repeats the cursor in the data; comments are keep-alives.
                }
            }
            match self.response.chunk().await? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}
