//! Writing fetched files: [`FileWriter`] (whole files and deltas, checked as they are
//! written, renamed in when whole) and [`OpenAhead`], the helper thread that creates a
//! build's files ahead of the transfer.

use super::*;

/// A file created for a pending entry: the name it is written under, and the open file.
type Created = (PathBuf, fs::File);

/// Files of a build created ahead on a helper thread ([`Build::open_ahead`]). Dropping it
/// stops the helper (within one file) and removes the files it made that were not taken.
#[derive(Debug)]
pub struct OpenAhead {
    pub(super) rx: Option<std::sync::mpsc::Receiver<(usize, Option<Created>)>>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
    pub(super) stop: Arc<AtomicBool>,
}

impl OpenAhead {
    /// No helper: every file is created by [`Build::writer_ahead`] itself.
    pub(super) fn none() -> Self {
        Self {
            rx: None,
            thread: None,
            stop: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The file created for entry `index`, if the helper made it (`None`: create it here).
    pub(super) fn take(&mut self, index: usize) -> Option<Created> {
        match self.rx.as_ref()?.recv() {
            Ok((i, created)) if i == index => created,
            Ok((_, created)) => {
                // Out of step (never expected): stop the helper, undo what it made, and
                // create the rest inline.
                Self::remove(created);
                self.stop();
                None
            }
            Err(_) => {
                self.stop();
                None
            }
        }
    }

    /// Stops the helper and removes every file it created that was not taken.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(rx) = self.rx.take() {
            // Ends when the helper returns (it checks `stop` before each file).
            for (_, created) in rx {
                Self::remove(created);
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn remove(created: Option<Created>) {
        if let Some((path, file)) = created {
            drop(file);
            let _ = fs::remove_file(path);
        }
    }
}

impl Drop for OpenAhead {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Receives one file's bytes, checks them and puts the file in place.
///
/// A whole file is checked against the manifest's [`TransferCheck`] (XXH3-128, from the same
/// read on the primary as the content hash). A **delta** (a large file
/// rebuilt from its copy in a kept generation plus the ranges fetched from the primary) is
/// checked chunk by chunk instead, which costs only what changed:
/// - every fetched byte is hashed into the manifest chunk it belongs to, and each chunk's
///   hash must match the new manifest's;
/// - the local segments are copied inside the kernel (`copy_file_range(2)`; read/write where
///   the file system cannot) and not re-hashed. Each is made of whole chunks of the new
///   manifest whose hashes equal chunks of the old manifest at that place of the base file
///   ([`diff`] matched them), and the base file belongs to a generation of this store,
///   whose files were checked when it was built and are never written in place;
/// - the chunks cover the file exactly ([`Manifest::check`]), so a delta that passes holds
///   the content the primary chunked. The whole-content hash is not recomputed (the primary
///   computed it from the same read as the chunks).
///
/// What this trusts that the whole-file check did not: that nobody modified a kept
/// generation's file behind the store's back (the web server only reads them).
#[derive(Debug)]
pub struct FileWriter {
    /// Unbuffered: data arrives in frames of up to 1 MiB (a buffer per file costs more
    /// than it saves over 20,000 small files).
    pub(super) file: fs::File,
    /// Where the bytes go: `dst` itself in a tree built from scratch, else a name beside it.
    pub(super) tmp: PathBuf,
    pub(super) dst: PathBuf,
    /// The transfer check of a file fetched whole (unused for a delta).
    pub(super) checker: TransferChecker,
    /// Bytes of the new file written so far (fetched and copied).
    pub(super) written: u64,
    pub(super) want: TransferCheck,
    pub(super) entry: Entry,
    /// For a delta: the base file in a kept generation.
    pub(super) base: Option<fs::File>,
    /// Delta segments still to write, last first.
    pub(super) segments: Vec<Segment>,
    /// Bytes still expected for the current remote segment.
    pub(super) remote_left: u64,
    /// For a delta: the new file's chunks (empty for a file fetched whole).
    pub(super) chunks: Vec<Chunk>,
    /// Index in `chunks` of the chunk the next byte belongs to.
    pub(super) next_chunk: usize,
    /// Hash of the fetched bytes of chunk `next_chunk` so far.
    pub(super) chunk_hasher: blake3::Hasher,
    /// How many bytes of chunk `next_chunk` went into `chunk_hasher`.
    pub(super) chunk_fill: u64,
}

impl FileWriter {
    /// Feeds bytes from the primary (the whole file, or the delta's remote ranges in order).
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        if self.base.is_none() {
            self.checker.update(data);
            return self.put(data);
        }
        while !data.is_empty() {
            if self.remote_left == 0 {
                self.copy_local()?;
                match self.segments.pop() {
                    Some(Segment::Remote { offset, len }) if offset == self.written => {
                        self.remote_left = len
                    }
                    Some(Segment::Remote { offset, .. }) => {
                        return Err(self.fail(format!("remote segment at {offset} is misplaced")))
                    }
                    _ => return Err(self.fail("more bytes than the delta announced".into())),
                }
            }
            let n = (self.remote_left.min(data.len() as u64)) as usize;
            self.put_remote(&data[..n])?;
            self.remote_left -= n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Writes fetched bytes of a delta, checking each chunk they complete.
    fn put_remote(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let mut rest = data;
        while !rest.is_empty() {
            let Some(c) = self.chunks.get(self.next_chunk).copied() else {
                return Err(self.fail("bytes beyond the last chunk".into()));
            };
            let len = u64::from(c.len);
            let n = (len - self.chunk_fill).min(rest.len() as u64) as usize;
            self.chunk_hasher.update(&rest[..n]);
            self.chunk_fill += n as u64;
            rest = &rest[n..];
            if self.chunk_fill == len {
                let got = ContentHash(*self.chunk_hasher.finalize().as_bytes());
                if got != c.hash {
                    return Err(self.fail(format!(
                        "chunk at {} of {len} bytes has hash {got:?}, manifest says {:?}",
                        c.offset, c.hash
                    )));
                }
                self.chunk_hasher.reset();
                self.chunk_fill = 0;
                self.next_chunk += 1;
            }
        }
        self.put(data)
    }

    /// Copies the local segments that come next from the base file.
    fn copy_local(&mut self) -> Result<(), StoreError> {
        while let Some(Segment::Local { offset, len }) = self.segments.last().copied() {
            self.segments.pop();
            // The segment must be whole chunks of the new file, starting here.
            let end = self.written + len;
            let mut at = self.written;
            while at < end && self.chunk_fill == 0 {
                match self.chunks.get(self.next_chunk) {
                    Some(c) if c.offset == at => {
                        at += u64::from(c.len);
                        self.next_chunk += 1;
                    }
                    _ => break,
                }
            }
            if at != end {
                return Err(self.fail(format!(
                    "local segment of {len} bytes at {} does not cover whole chunks",
                    self.written
                )));
            }
            let Some(base) = self.base.as_ref() else {
                return Ok(());
            };
            copy_range(base, offset, len, &self.file).map_err(io_err("copy base", &self.tmp))?;
            self.written = end;
        }
        Ok(())
    }

    fn put(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.written += data.len() as u64;
        self.file
            .write_all(data)
            .map_err(io_err("write", &self.tmp))
    }

    /// A delta that does not line up with the manifest: the temporary file goes.
    fn fail(&self, reason: String) -> StoreError {
        let _ = fs::remove_file(&self.tmp);
        StoreError::DeltaMismatch {
            path: self.entry.path.clone(),
            at: self.written,
            reason,
        }
    }

    /// Checks size and transfer check (chunk hashes for a delta), sets mode and mtime, renames into the
    /// generation.
    pub fn finish(mut self) -> Result<(), StoreError> {
        if self.base.is_some() {
            self.copy_local()?;
            if !self.segments.is_empty()
                || self.remote_left != 0
                || self.chunk_fill != 0
                || self.next_chunk != self.chunks.len()
                || self.written != self.entry.size
            {
                return Err(self.fail(format!(
                    "delta ends after {} of {} bytes",
                    self.written, self.entry.size
                )));
            }
        } else {
            let got = self.checker.finish();
            if got != self.want || self.written != self.entry.size {
                let _ = fs::remove_file(&self.tmp);
                return Err(StoreError::ContentMismatch {
                    path: self.entry.path.clone(),
                    got_bytes: self.written,
                    want_bytes: self.entry.size,
                    got,
                    want: self.want,
                });
            }
        }
        set_meta(&self.file, &self.entry, &self.tmp)?;
        drop(self.file);
        if self.tmp == self.dst {
            return Ok(());
        }
        fs::rename(&self.tmp, &self.dst).map_err(io_err("rename", &self.tmp))
    }
}

/// Appends `len` bytes at `offset` of `base` to `out` (at its file position): inside the
/// kernel with `copy_file_range(2)`, or by read/write where the file systems cannot.
fn copy_range(base: &fs::File, mut offset: u64, len: u64, out: &fs::File) -> io::Result<()> {
    use rustix::io::Errno;
    let mut left = len;
    while left > 0 {
        let n = left.min(1 << 30) as usize;
        match rustix::fs::copy_file_range(base, Some(&mut offset), out, None, n) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(k) => left -= k as u64,
            Err(e)
                if e == Errno::XDEV
                    || e == Errno::NOSYS
                    || e == Errno::INVAL
                    || e == Errno::OPNOTSUPP =>
            {
                return copy_by_read(base, offset, left, out);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// [`copy_range`] through user space.
fn copy_by_read(base: &fs::File, mut offset: u64, len: u64, mut out: &fs::File) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut left = len;
    let mut buf = vec![0u8; 256 * 1024];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        base.read_exact_at(&mut buf[..n], offset)?;
        out.write_all(&buf[..n])?;
        offset += n as u64;
        left -= n as u64;
    }
    Ok(())
}

pub(super) fn set_meta(f: &fs::File, e: &Entry, p: &Path) -> Result<(), StoreError> {
    f.set_permissions(fs::Permissions::from_mode(e.mode & 0o777))
        .map_err(io_err("chmod", p))?;
    if let Some(t) = e.mtime.to_system_time() {
        f.set_modified(t).map_err(io_err("set mtime", p))?;
    }
    Ok(())
}
