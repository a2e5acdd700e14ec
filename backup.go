package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Online backup: `stmdb backup --addr HOST:PORT --out DIR [--follow]`
// reads a REPLICATE stream (replicate.go) into DIR, which is laid out like
// a data directory plus a manifest:
//
//	DIR/snapshots/full-<S>.snap   the full snapshot at offset S
//	DIR/wal/<first>.wal           the log from S+1 on, in segment files
//	DIR/MANIFEST.json             every file with its size and SHA-256, the
//	                              first and last offsets, the server's epoch
//
// Segments hold the primary's records byte for byte (each with its CRC)
// and are not preallocated. The manifest is written last, after the files
// it lists are synced, so it always describes a consistent backup; bytes
// past what it lists are a tail that an interrupted backup left, which
// verify reports, restore ignores and a resumed backup cuts. Like
// PostgreSQL's backup_manifest, the manifest ends with its own checksum:
// "manifest_checksum" is the SHA-256 of every byte before it.
//
// With --follow the backup keeps appending the log until interrupted
// (continuous archiving); on SIGINT it syncs, writes the manifest and exits
// 0. Run again on the same directory it continues from where it stopped,
// as long as the server still retains the next record.

// backupSegmentSize is where the backup starts a new segment file (a
// variable for tests).
var backupSegmentSize int64 = 64 << 20

const (
	backupManifestName = "MANIFEST.json"
	backupFormat       = "stmdb-backup/1"
	backupSyncBytes    = 8 << 20 // sync (and ack) at least this often under load
	backupManifestKey  = ",\n  \"manifest_checksum\": \""
	backupTimeLayout   = "2006-01-02T15:04:05.000Z07:00"
)

type backupManifest struct {
	Format         string       `json:"format"`
	Epoch          uint64       `json:"epoch"`
	Server         string       `json:"server"`
	StartedAt      string       `json:"started_at"`
	UpdatedAt      string       `json:"updated_at"`
	FirstOffset    uint64       `json:"first_offset"`    // = snapshot_offset: the earliest state it restores
	LastOffset     uint64       `json:"last_offset"`     // the last record it holds
	SnapshotOffset uint64       `json:"snapshot_offset"` // S
	SnapshotTime   string       `json:"snapshot_time"`   // the primary's clock when S was captured
	LastTime       string       `json:"last_time"`       // the primary's clock when the backup last heard from it
	Records        uint64       `json:"records"`         // log records held: last_offset - snapshot_offset
	Stopped        string       `json:"stopped"`         // "caught_up", "interrupted", or "running"
	Files          []backupFile `json:"files"`
}

type backupFile struct {
	Path        string `json:"path"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	FirstOffset uint64 `json:"first_offset,omitempty"` // segments: the records they hold
	LastOffset  uint64 `json:"last_offset,omitempty"`
}

// encodeManifest renders m followed by its checksum.
func encodeManifest(m *backupManifest) []byte {
	body, _ := json.MarshalIndent(m, "", "  ")
	body = bytes.TrimSuffix(body, []byte("\n}"))
	sum := sha256.Sum256(body)
	return fmt.Appendf(body, "%s%s\"\n}\n", backupManifestKey, hex.EncodeToString(sum[:]))
}

// decodeManifest checks a manifest's checksum and parses it. The error
// names the byte offset where the manifest stops making sense.
func decodeManifest(data []byte) (*backupManifest, int64, error) {
	i := bytes.LastIndex(data, []byte(backupManifestKey))
	if i < 0 {
		return nil, int64(len(data)), errors.New("no manifest_checksum (truncated?)")
	}
	rest := data[i+len(backupManifestKey):]
	if len(rest) < 64 || !bytes.Equal(bytes.TrimSpace(rest[64:]), []byte("\"\n}")) && !bytes.Equal(bytes.TrimSpace(rest[64:]), []byte("\"}")) {
		return nil, int64(i), errors.New("manifest_checksum is incomplete (truncated?)")
	}
	sum := sha256.Sum256(data[:i])
	if hex.EncodeToString(sum[:]) != string(rest[:64]) {
		return nil, int64(i), errors.New("manifest checksum mismatch")
	}
	var m backupManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, 0, fmt.Errorf("undecodable: %v", err)
	}
	if m.Format != backupFormat {
		return nil, 0, fmt.Errorf("unknown format %q", m.Format)
	}
	return &m, 0, nil
}

func readManifest(dir string) (*backupManifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, backupManifestName))
	if err != nil {
		return nil, err
	}
	m, off, err := decodeManifest(data)
	if err != nil {
		return nil, fmt.Errorf("%s: offset %d: %v", backupManifestName, off, err)
	}
	return m, nil
}

// writeFileDurably writes data to dir/name via a temp file, fsync, rename
// and a directory fsync.
func writeFileDurably(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = syncData(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = renameFile(tmp, filepath.Join(dir, name))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func fmtMillis(ms int64) string { return time.UnixMilli(ms).UTC().Format(backupTimeLayout) }

// backupWriter appends the stream to the backup directory.
type backupWriter struct {
	dir string
	man backupManifest

	seg      *os.File // the segment being appended, nil before the first record
	segFile  backupFile
	segHash  hash.Hash
	unsynced int64 // bytes written since the last sync
	records  uint64
	bytes    int64
}

// appendRecords appends records first..last (checked by the stream) to the
// active segment, starting a new one when it is full.
func (b *backupWriter) appendRecords(data []byte, first, last uint64) error {
	if first != b.man.LastOffset+1 {
		return fmt.Errorf("the stream sent record %d after %d", first, b.man.LastOffset)
	}
	if b.seg != nil && b.segFile.Size+int64(len(data)) > backupSegmentSize {
		if err := b.sealSegment(); err != nil {
			return err
		}
	}
	if b.seg == nil {
		name := walSegmentName(first)
		f, err := os.OpenFile(filepath.Join(b.dir, "wal", name), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		if err := syncDir(filepath.Join(b.dir, "wal")); err != nil {
			f.Close()
			return err
		}
		b.seg, b.segHash = f, sha256.New()
		b.segFile = backupFile{Path: "wal/" + name, FirstOffset: first, LastOffset: first - 1}
	}
	if _, err := b.seg.Write(data); err != nil {
		return err
	}
	b.segHash.Write(data)
	b.segFile.Size += int64(len(data))
	b.segFile.LastOffset = last
	b.unsynced += int64(len(data))
	b.records += last - first + 1
	b.bytes += int64(len(data))
	b.man.LastOffset = last
	b.man.Records = last - b.man.SnapshotOffset
	return nil
}

// sync makes everything written so far durable.
func (b *backupWriter) sync() error {
	if b.seg == nil || b.unsynced == 0 {
		return nil
	}
	if err := syncData(b.seg); err != nil {
		return err
	}
	b.unsynced = 0
	return nil
}

// sealSegment syncs and closes the active segment and lists it.
func (b *backupWriter) sealSegment() error {
	if b.seg == nil {
		return nil
	}
	if err := b.sync(); err != nil {
		return err
	}
	if err := b.seg.Close(); err != nil {
		return err
	}
	b.segFile.SHA256 = hex.EncodeToString(b.segHash.Sum(nil))
	b.man.Files = append(b.man.Files, b.segFile)
	b.seg = nil
	return nil
}

// writeManifest syncs the data and records it in the manifest.
func (b *backupWriter) writeManifest(stopped string) error {
	if err := b.sync(); err != nil {
		return err
	}
	m := b.man
	m.Files = append([]backupFile(nil), b.man.Files...)
	if b.seg != nil {
		f := b.segFile
		f.SHA256 = hex.EncodeToString(b.segHash.Sum(nil))
		m.Files = append(m.Files, f)
	}
	m.Stopped = stopped
	m.UpdatedAt = time.Now().UTC().Format(backupTimeLayout)
	return writeFileDurably(b.dir, backupManifestName, encodeManifest(&m))
}

// receiveSnapshot writes the snapshot's 'S' messages to its file and checks
// it against the 'E' message and its own CRC.
func (b *backupWriter) receiveSnapshot(rs *replStream, lsn uint64, progress func()) error {
	dir := filepath.Join(b.dir, "snapshots")
	name := fmt.Sprintf("%s%020d%s", snapPrefix, lsn, snapSuffix)
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // a no-op once renamed
	defer f.Close()
	h := sha256.New()
	var crc uint32
	var size int64
	var tail []byte // the last 12 bytes: the snapshot's CRC and end magic
	for {
		m, err := rs.next()
		if err != nil {
			return err
		}
		if m.kind == replMsgSnapshotEnd {
			if m.offset != lsn || uint64(size) != m.size || crc != m.crc {
				return fmt.Errorf("snapshot transfer damaged: %d bytes crc %08x, the primary sent %d bytes crc %08x", size, crc, m.size, m.crc)
			}
			break
		}
		if m.kind != replMsgSnapshot || m.offset != lsn {
			return fmt.Errorf("unexpected message %q inside the snapshot", m.kind)
		}
		if _, err := f.Write(m.data); err != nil {
			return err
		}
		h.Write(m.data)
		crc = crc32.Update(crc, walCRCTable, m.data)
		size += int64(len(m.data))
		b.bytes += int64(len(m.data))
		tail = append(tail, m.data...)
		if len(tail) > 64 {
			tail = tail[len(tail)-64:]
		}
		progress()
	}
	if err := syncData(f); err != nil {
		return err
	}
	// The snapshot's own CRC is checked by verify and restore, which
	// decode it; here the transfer CRC and the end marker suffice.
	if !bytes.HasSuffix(tail, []byte(snapEndMagic)) {
		return errors.New("snapshot has no end marker")
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := renameFile(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	b.man.Files = append(b.man.Files, backupFile{Path: "snapshots/" + name, Size: size, SHA256: hex.EncodeToString(h.Sum(nil))})
	return nil
}

// backupOptions are stmdb backup's flags.
type backupOptions struct {
	addr, out, token string
	follow           bool
	dial             dialOptions
	progress         bool // draw progress on stderr (a terminal)
	// synced, if set, is told the offset made durable after each sync
	// (a seam for tests).
	synced func(last uint64)
}

func cmdBackup(args []string, stdout, stderr io.Writer) int {
	o := backupOptions{addr: os.Getenv("RSTMDB_ADDR"), token: os.Getenv("RSTMDB_TOKEN")}
	if o.addr == "" {
		o.addr = cliDefaultAddr
	}
	var useTLS, insecure bool
	var caCert string
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.addr, "addr", o.addr, "server `HOST:PORT` (env RSTMDB_ADDR)")
	fs.StringVar(&o.out, "out", "", "backup `DIR`ectory: new or empty, or a backup to continue")
	fs.StringVar(&o.token, "token", o.token, "bearer `TOKEN` (env RSTMDB_TOKEN)")
	fs.BoolVar(&o.follow, "follow", false, "keep archiving new records until interrupted (SIGINT)")
	fs.BoolVar(&useTLS, "tls", false, "connect with TLS")
	fs.StringVar(&caCert, "ca-cert", "", "PEM `FILE` of CA certificates to trust (implies --tls)")
	fs.BoolVar(&insecure, "insecure", false, "do not verify the server's certificate (implies --tls)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: stmdb backup --addr HOST:PORT --out DIR [--token T] [--follow]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if o.out == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	o.dial.Token = o.token
	if useTLS || caCert != "" || insecure {
		cfg, err := clientTLSConfig(o.addr, caCert, "", "", insecure)
		if err != nil {
			fmt.Fprintf(stderr, "stmdb backup: TLS: %v\n", err)
			return 2
		}
		o.dial.TLS = cfg
	}
	if f, ok := stderr.(*os.File); ok {
		o.progress = cliIsTerminal(f)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := backupRun(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "stmdb backup: %v\n", err)
		return 1
	}
	return 0
}

// backupRun takes (or continues) a backup until the stream ends, or until
// ctx is cancelled under --follow.
func backupRun(ctx context.Context, o backupOptions, stdout, stderr io.Writer) error {
	b := &backupWriter{dir: o.out}
	var from *uint64
	resume, err := backupPrepare(b)
	if err != nil {
		return err
	}
	if resume {
		last := b.man.LastOffset
		from = &last
	}
	c, err := dialClientOpts(o.addr, o.dial)
	if err != nil {
		return err
	}
	rs, err := replicateOpen(c, from, o.follow)
	if err != nil {
		c.close()
		return err
	}
	defer rs.close()
	stopWatch := context.AfterFunc(ctx, func() { rs.close() })
	defer stopWatch()
	h := rs.hello
	switch {
	case resume && h.SnapshotOffset != nil:
		return fmt.Errorf("the server no longer retains record %d (compacted); the backup in %s cannot continue: start a new one in another directory", *from+1, o.out)
	case !resume && h.SnapshotOffset == nil:
		return errors.New("the server sent no snapshot")
	}
	if !resume {
		now := time.Now().UTC().Format(backupTimeLayout)
		b.man = backupManifest{Format: backupFormat, Epoch: h.Epoch, Server: o.addr, StartedAt: now,
			FirstOffset: *h.SnapshotOffset, LastOffset: *h.SnapshotOffset, SnapshotOffset: *h.SnapshotOffset,
			SnapshotTime: fmtMillis(h.SnapshotTime), LastTime: fmtMillis(h.SnapshotTime)}
	}
	start := time.Now()
	lastDraw := time.Time{}
	progress := func() {
		if !o.progress || time.Since(lastDraw) < 200*time.Millisecond {
			return
		}
		lastDraw = time.Now()
		fmt.Fprintf(stderr, "\rbackup: %.1f MB, %d records, offset %d   ", float64(b.bytes)/1e6, b.records, b.man.LastOffset)
	}
	finish := func(stopped string) error {
		if o.progress {
			fmt.Fprintln(stderr)
		}
		if err := b.writeManifest(stopped); err != nil {
			return err
		}
		el := time.Since(start).Seconds()
		fmt.Fprintf(stdout, "backup %s: offsets %d..%d (snapshot at %d, %d log records), %d records and %.1f MB received in %.1fs (%.1f MB/s, %.0f records/s)\n",
			stopped, b.man.FirstOffset, b.man.LastOffset, b.man.SnapshotOffset, b.man.Records, b.records, float64(b.bytes)/1e6, el,
			float64(b.bytes)/1e6/el, float64(b.records)/el)
		fmt.Fprintf(stdout, "final offset %d\n", b.man.LastOffset)
		return nil
	}
	if !resume {
		if err := b.receiveSnapshot(rs, *h.SnapshotOffset, progress); err != nil {
			if ctx.Err() != nil {
				return errors.New("interrupted before the snapshot was complete: no backup was made")
			}
			return fmt.Errorf("receiving the snapshot: %w", err)
		}
		if err := b.writeManifest("running"); err != nil {
			return err
		}
	}
	lastManifest := time.Now()
	for {
		m, err := rs.next()
		if err != nil {
			if ctx.Err() != nil {
				return finish("interrupted")
			}
			if ferr := b.writeManifest("interrupted"); ferr != nil {
				return ferr
			}
			return fmt.Errorf("the stream ended at offset %d: %w (the backup holds %d..%d; run again to continue)", b.man.LastOffset, err, b.man.FirstOffset, b.man.LastOffset)
		}
		switch m.kind {
		case replMsgRecords:
			if err := b.appendRecords(m.data, m.offset, m.last); err != nil {
				return err
			}
			if t, ok := recordTime(m.data); ok {
				b.man.LastTime = fmtMillis(max(t, parseMillis(b.man.LastTime)))
			}
			if b.unsynced >= backupSyncBytes {
				if err := b.sync(); err != nil {
					return err
				}
				if o.follow {
					rs.ack(b.man.LastOffset) // advisory: a broken connection shows on the next read
				}
				if o.synced != nil {
					o.synced(b.man.LastOffset)
				}
			}
			progress()
		case replMsgHeartbeat:
			b.man.LastTime = fmtMillis(max(m.time, parseMillis(b.man.LastTime)))
			if err := b.sync(); err != nil {
				return err
			}
			if o.follow {
				rs.ack(b.man.LastOffset)
			}
			if o.synced != nil {
				o.synced(b.man.LastOffset)
			}
			if time.Since(lastManifest) > 10*time.Second {
				if err := b.writeManifest("running"); err != nil {
					return err
				}
				lastManifest = time.Now()
			}
			progress()
		case replMsgEnd:
			if m.offset != b.man.LastOffset {
				return fmt.Errorf("the stream ended at %d but the backup holds up to %d", m.offset, b.man.LastOffset)
			}
			return finish("caught_up")
		default:
			return fmt.Errorf("unexpected stream message %q", m.kind)
		}
	}
}

// recordTime is the timestamp of the last record in data (on-disk form).
func recordTime(data []byte) (int64, bool) {
	var t int64
	ok := false
	replEachRecord(data, func(_ uint64, _ uint8, payload, _ []byte) error {
		if v, k := payloadTime(payload); k {
			t, ok = v, true
		}
		return nil
	})
	return t, ok
}

// payloadTime reads a record payload's time field (always its first).
func payloadTime(p []byte) (int64, bool) {
	if len(p) < 2 || p[0] != recTagTime {
		return 0, false
	}
	v, n := binary.Uvarint(p[1:])
	return int64(v), n > 0
}

func parseMillis(s string) int64 {
	t, err := time.Parse(backupTimeLayout, s)
	if err != nil {
		return 0
	}
	return t.UnixMilli()
}

// backupPrepare checks --out: a new or empty directory starts a backup; a
// backup continues (the tail past its manifest is cut first); anything
// else is refused.
func backupPrepare(b *backupWriter) (resume bool, err error) {
	ents, err := os.ReadDir(b.dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return false, err
	case len(ents) > 0:
		if _, serr := os.Stat(filepath.Join(b.dir, backupManifestName)); serr != nil {
			return false, fmt.Errorf("%s is not empty and holds no backup (%s)", b.dir, backupManifestName)
		}
		return true, backupReopen(b)
	}
	for _, d := range []string{b.dir, filepath.Join(b.dir, "snapshots"), filepath.Join(b.dir, "wal")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return false, err
		}
	}
	return false, syncDir(filepath.Dir(filepath.Clean(b.dir)))
}

// backupReopen verifies the backup in b.dir, cuts whatever an interrupted
// run left past its manifest, and sets b up to append after it.
func backupReopen(b *backupWriter) error {
	rep := verifyDir(b.dir, verifyOptions{noReplay: true})
	if rep.Problem != nil {
		return fmt.Errorf("the backup in %s does not verify, so it cannot be continued: %s", b.dir, rep.Problem)
	}
	m := rep.Manifest
	listed := map[string]bool{}
	for _, f := range m.Files {
		listed[f.Path] = true
		if strings.HasPrefix(f.Path, "wal/") {
			if err := truncateDurably(filepath.Join(b.dir, f.Path), f.Size); err != nil {
				return err
			}
		}
	}
	files, err := walListSegments(filepath.Join(b.dir, "wal"))
	if err != nil {
		return err
	}
	for _, sf := range files {
		if !listed["wal/"+sf.name] {
			if err := os.Remove(filepath.Join(b.dir, "wal", sf.name)); err != nil {
				return err
			}
		}
	}
	if err := syncDir(filepath.Join(b.dir, "wal")); err != nil {
		return err
	}
	b.man = *m
	return nil
}

// truncateDurably cuts path to size (if longer) and syncs it.
func truncateDurably(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() <= size {
		return err
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return syncData(f)
}
