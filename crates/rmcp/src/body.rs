//! Response bodies read within rmcp's limits: a JSON body read whole up to
//! a size, and an SSE body whose events may not grow past a size.

use std::{
    error::Error as StdError,
    fmt,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use futures_util::{StreamExt, stream::BoxStream};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use rmcp::transport::streamable_http_client::SseError;
use sse_stream::{Sse, SseStream};
use tower_token_refresh::BoxError;

/// Why a whole body could not be read.
pub(crate) enum ReadError {
    /// It is longer than the limit (by its `Content-Length` or as read).
    TooLarge,
    /// The body failed (the connection broke, say).
    Body(BoxError),
}

/// Reads `body` whole, failing as soon as it is known to pass `max` bytes.
pub(crate) async fn read_limited<B>(body: B, max: usize) -> Result<Bytes, ReadError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let declared = body.size_hint().exact();
    if declared.is_some_and(|length| length > max as u64) {
        return Err(ReadError::TooLarge);
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ReadError::TooLarge),
        Err(e) => Err(ReadError::Body(e)),
    }
}

/// The events of an SSE `body`, each at most `max_event` bytes: past that
/// the stream yields one error and ends.
pub(crate) fn sse_events<B>(body: B, max_event: usize) -> BoxStream<'static, Result<Sse, SseError>>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    SseStream::new(EventLimit {
        body,
        limit: EventSize::new(max_event),
        failed: false,
    })
    .boxed()
}

/// An SSE event outgrew [`StreamableHttpResponseLimits::max_sse_event_size`](rmcp::transport::streamable_http_client::StreamableHttpResponseLimits).
#[derive(Debug)]
pub(crate) struct EventTooLarge {
    max: usize,
}

impl fmt::Display for EventTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SSE event exceeded the maximum size of {} bytes",
            self.max
        )
    }
}

impl StdError for EventTooLarge {}

/// The error of an [`EventLimit`] body: the inner body's, or
/// [`EventTooLarge`]. `SseStream` wants a body error that is a
/// `std::error::Error`, which `BoxError` is not.
#[derive(Debug)]
pub(crate) struct SseBodyError(BoxError);

impl fmt::Display for SseBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for SseBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// Counts the bytes of the SSE event being received: every byte of its
/// lines but the line ends, comments included. A blank line ends an event.
#[derive(Debug)]
struct EventSize {
    max: usize,
    event: usize,
    line: usize,
    /// The last byte was a CR: an LF now ends no second line.
    after_cr: bool,
}

impl EventSize {
    fn new(max: usize) -> Self {
        EventSize {
            max,
            event: 0,
            line: 0,
            after_cr: false,
        }
    }

    /// Whether the event is still within the limit after `chunk`.
    fn observe(&mut self, chunk: &[u8]) -> bool {
        for &byte in chunk {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    if self.line == 0 {
                        self.event = 0;
                    }
                    self.line = 0;
                }
                _ => {
                    self.line += 1;
                    self.event += 1;
                    if self.event > self.max {
                        return false;
                    }
                }
            }
        }
        true
    }
}

pin_project_lite::pin_project! {
    /// A body that fails once an SSE event in it outgrows the limit, before
    /// the parser buffers it.
    struct EventLimit<B> {
        #[pin]
        body: B,
        limit: EventSize,
        failed: bool,
    }
}

impl<B> Body for EventLimit<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = SseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SseBodyError>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let frame = match ready!(this.body.poll_frame(cx)) {
            Some(Ok(frame)) => frame.map_data(|mut data| data.copy_to_bytes(data.remaining())),
            Some(Err(e)) => {
                *this.failed = true;
                return Poll::Ready(Some(Err(SseBodyError(e.into()))));
            }
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref()
            && !this.limit.observe(data)
        {
            *this.failed = true;
            let too_large = EventTooLarge {
                max: this.limit.max,
            };
            return Poll::Ready(Some(Err(SseBodyError(Box::new(too_large)))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fits(max: usize, chunks: &[&str]) -> bool {
        let mut size = EventSize::new(max);
        chunks.iter().all(|c| size.observe(c.as_bytes()))
    }

    #[test]
    fn a_blank_line_starts_a_new_event() {
        assert!(fits(8, &["data: ab\n\n", "data: cd\n\n"]));
        assert!(fits(8, &["data: ab\r\n\r\n", "data: cd\r\r"]));
    }

    #[test]
    fn an_event_is_counted_across_lines_and_chunks() {
        assert!(!fits(8, &["data: a", "b\ndata: c\n\n"]));
        assert!(!fits(13, &["data: a\r\n", "data: b\n\n"]));
        assert!(fits(14, &["data: a\r\n", "data: b\n\n"]));
    }

    #[test]
    fn a_crlf_is_one_line_end_not_a_blank_line() {
        // Were the LF of "\r\n" a blank line, the second line would start
        // a new event and fit.
        assert!(!fits(10, &["data: abc\r", "\ndata: def\n\n"]));
    }
}
