//! The export file: a magic line, a format line, then records, each
//! `<tag> <length>\n<payload>\n`, and last an `end` record holding the
//! CRC-32 of every byte before it.
//!
//! Every payload is one opaque string (a name, a version, DDL, a chunk of
//! `COPY` text), so no value needs escaping, and a reader never has to look
//! inside a payload to find the next record: data streams through in
//! chunks. A file cut short ends before its `end` record; a flipped byte
//! anywhere fails the checksum.

use std::io::{BufRead, Read, Write};

use super::error::TransferError;

/// The first line of every export.
pub(crate) const MAGIC: &str = "appschema tenant export";

/// The format this code writes and the only one it reads: the second line
/// of every export says `format <version>`.
///
/// ```
/// assert_eq!(appschema::provision::FORMAT_VERSION, 1);
/// ```
pub const FORMAT_VERSION: u32 = 1;

/// The largest payload a reader accepts: the biggest records are a
/// schema's DDL; data comes in chunks of [`DATA_CHUNK`] bytes. A corrupt
/// length never makes the reader allocate more than this.
const MAX_PAYLOAD: usize = 256 << 20;

/// How many bytes of `COPY` text a `data` record carries at most.
pub(crate) const DATA_CHUNK: usize = 256 << 10;

/// Writes records, keeping the running checksum.
pub(crate) struct RecordWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> RecordWriter<W> {
    /// Writes the magic and format lines.
    pub(crate) fn new(out: W) -> Result<RecordWriter<W>, TransferError> {
        let mut w = RecordWriter {
            out,
            crc: crc32fast::Hasher::new(),
            bytes: 0,
        };
        w.raw(format!("{MAGIC}\nformat {FORMAT_VERSION}\n").as_bytes())?;
        Ok(w)
    }

    fn raw(&mut self, bytes: &[u8]) -> Result<(), TransferError> {
        self.crc.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes).map_err(TransferError::Io)
    }

    /// Writes one record.
    pub(crate) fn record(&mut self, tag: &str, payload: &[u8]) -> Result<(), TransferError> {
        self.raw(format!("{tag} {}\n", payload.len()).as_bytes())?;
        self.raw(payload)?;
        self.raw(b"\n")
    }

    /// Bytes written so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the `end` record and flushes.
    pub(crate) fn finish(mut self) -> Result<u64, TransferError> {
        let crc = format!("{:08x}", self.crc.clone().finalize());
        let trailer = format!("end {}\n{crc}\n", crc.len());
        self.bytes += trailer.len() as u64;
        self.out
            .write_all(trailer.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(TransferError::Io)?;
        Ok(self.bytes)
    }
}

/// One record read back.
#[derive(Debug)]
pub(crate) struct Record {
    pub tag: String,
    pub payload: Vec<u8>,
}

impl Record {
    /// The payload as UTF-8 text.
    pub(crate) fn text(&self) -> Result<&str, TransferError> {
        std::str::from_utf8(&self.payload)
            .map_err(|_| corrupt(format!("the `{}` record is not UTF-8", self.tag)))
    }
}

pub(crate) fn corrupt(why: impl Into<String>) -> TransferError {
    TransferError::Corrupt(why.into())
}

/// Reads records, checking the format line on creation and the checksum
/// at the `end` record.
pub(crate) struct RecordReader<R: BufRead> {
    input: R,
    crc: crc32fast::Hasher,
    bytes: u64,
    ended: bool,
}

impl<R: BufRead> RecordReader<R> {
    /// Checks the magic and format lines.
    pub(crate) fn new(input: R) -> Result<RecordReader<R>, TransferError> {
        let mut r = RecordReader {
            input,
            crc: crc32fast::Hasher::new(),
            bytes: 0,
            ended: false,
        };
        let magic = match r.line(true) {
            Err(TransferError::Corrupt(_)) => return Err(TransferError::NotAnExport),
            other => other?,
        };
        if magic != MAGIC {
            return Err(TransferError::NotAnExport);
        }
        let format = r.line(true)?;
        match format.strip_prefix("format ") {
            Some(v) if v == FORMAT_VERSION.to_string() => Ok(r),
            Some(v) => Err(TransferError::UnsupportedFormat {
                found: v.to_string(),
            }),
            None => Err(corrupt("the second line must be `format <version>`")),
        }
    }

    /// A header line (at most 64 bytes), without its newline.
    fn line(&mut self, hashed: bool) -> Result<String, TransferError> {
        let mut line = Vec::new();
        (&mut self.input)
            .take(65)
            .read_until(b'\n', &mut line)
            .map_err(TransferError::Io)?;
        if line.last() != Some(&b'\n') {
            return Err(if line.is_empty() {
                corrupt("the file ends before its `end` record (truncated?)")
            } else if line.len() > 64 {
                corrupt("a record header is too long")
            } else {
                corrupt("the file ends inside a record header (truncated?)")
            });
        }
        if hashed {
            self.crc.update(&line);
        }
        self.bytes += line.len() as u64;
        line.pop();
        String::from_utf8(line).map_err(|_| corrupt("a record header is not UTF-8"))
    }

    /// The next record; the `end` record is checked here and never returned
    /// (`None` after it).
    pub(crate) fn next(&mut self) -> Result<Option<Record>, TransferError> {
        if self.ended {
            return Ok(None);
        }
        let expected = self.crc.clone().finalize();
        let header = self.line(false)?;
        let (tag, len) = header
            .split_once(' ')
            .and_then(|(tag, len)| Some((tag, len.parse::<usize>().ok()?)))
            .filter(|(tag, _)| {
                !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .ok_or_else(|| {
                corrupt(format!(
                    "`{}` is not a record header",
                    header.escape_debug()
                ))
            })?;
        if len > MAX_PAYLOAD {
            return Err(corrupt(format!(
                "a `{tag}` record claims {len} bytes, more than any record holds"
            )));
        }
        let tag = tag.to_string();
        if tag != "end" {
            self.crc.update(header.as_bytes());
            self.crc.update(b"\n");
        }
        let mut payload = vec![0; len + 1];
        self.input.read_exact(&mut payload).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                corrupt(format!(
                    "the file ends inside a `{tag}` record (truncated?)"
                ))
            } else {
                TransferError::Io(e)
            }
        })?;
        self.bytes += payload.len() as u64;
        if payload.pop() != Some(b'\n') {
            return Err(corrupt(format!(
                "the `{tag}` record does not end where its length says"
            )));
        }
        if tag == "end" {
            let found = String::from_utf8_lossy(&payload).into_owned();
            if found != format!("{expected:08x}") {
                return Err(corrupt(format!(
                    "the checksum is {expected:08x} but the file says {found}: it was changed or damaged after export"
                )));
            }
            let mut rest = [0u8; 1];
            if self.input.read(&mut rest).map_err(TransferError::Io)? != 0 {
                return Err(corrupt("there are bytes after the `end` record"));
            }
            self.ended = true;
            return Ok(None);
        }
        self.crc.update(&payload);
        self.crc.update(b"\n");
        Ok(Some(Record { tag, payload }))
    }

    /// The next record, which must exist (an export ends with `end`).
    pub(crate) fn expect_next(&mut self) -> Result<Record, TransferError> {
        self.next()?
            .ok_or_else(|| corrupt("the `end` record comes before the data it should close"))
    }

    /// Bytes read so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = RecordWriter::new(&mut out).unwrap();
        for (tag, payload) in records {
            w.record(tag, payload).unwrap();
        }
        w.finish().unwrap();
        out
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, TransferError> {
        let mut r = RecordReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next()? {
            out.push((rec.tag, rec.payload));
        }
        Ok(out)
    }

    #[test]
    fn records_round_trip_whatever_their_payload() {
        let payloads: [&[u8]; 4] = [b"", b"a\nb\tc", b"end 8\nffffffff\n", &[0, 255, 10]];
        let records: Vec<(&str, &[u8])> = payloads.iter().map(|p| ("data", *p)).collect();
        let back = read_all(&written(&records)).unwrap();
        assert_eq!(back.len(), 4);
        for ((_, p), (tag, q)) in records.iter().zip(&back) {
            assert_eq!(tag, "data");
            assert_eq!(p, &q.as_slice());
        }
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let bytes = written(&[("public_name", b"acme.example.com"), ("data", b"1\tx\n")]);
        for cut in 0..bytes.len() {
            assert!(read_all(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(read_all(&bad).is_err(), "flipped byte {i}");
        }
        let mut longer = bytes.clone();
        longer.push(b'x');
        assert!(read_all(&longer).is_err());
    }

    #[test]
    fn another_format_version_is_refused_naming_it() {
        let bytes = b"appschema tenant export\nformat 2\n";
        match read_all(bytes) {
            Err(TransferError::UnsupportedFormat { found }) => assert_eq!(found, "2"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_all(b"PGDMP..."),
            Err(TransferError::NotAnExport) | Err(TransferError::Corrupt(_))
        ));
    }
}
