package main

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Records are stored in the WAL in a compact binary form that replays
// fast: a sequence of (tag, value) fields, where strings and JSON values
// are uvarint-length-prefixed bytes and numbers are uvarints. Unknown tags
// are an error (a newer format must not be half-read). WAL_READ renders a
// decoded record as JSON (its struct tags), so the wire never sees this.

const (
	recTagTime byte = iota + 1
	recTagMachine
	recTagVersion
	recTagDef
	recTagChecksum
	recTagInstanceID
	recTagInitialState
	recTagInitialCtx
	recTagEvent
	recTagFromState
	recTagToState
	recTagPayload
	recTagCtx
	recTagEventID
	recTagIdemKey
	recTagIdemHash
	recTagOp     // one member of a batch: type byte, then a length-prefixed record
	recTagSource // who wrote an event other than a client: "timer"
	recTagPrev   // the instance's previous record (the history chain); absent = unknown (older records)
	recTagEpoch  // recEpoch: the epoch that starts at the record
)

// appendRecord appends r's binary form (without its type, which the WAL
// keeps in the record header).
func appendRecord(b []byte, r *record) []byte {
	b = recAppendUint(b, recTagTime, uint64(r.Time))
	b = recAppendStr(b, recTagMachine, r.Machine)
	if r.Version != 0 {
		b = recAppendUint(b, recTagVersion, uint64(r.Version))
	}
	b = recAppendBytes(b, recTagDef, r.Def)
	b = recAppendStr(b, recTagChecksum, r.Checksum)
	b = recAppendStr(b, recTagInstanceID, r.InstanceID)
	b = recAppendStr(b, recTagInitialState, r.InitialState)
	b = recAppendBytes(b, recTagInitialCtx, r.InitialCtx)
	b = recAppendStr(b, recTagEvent, r.Event)
	b = recAppendStr(b, recTagFromState, r.FromState)
	b = recAppendStr(b, recTagToState, r.ToState)
	b = recAppendBytes(b, recTagPayload, r.Payload)
	b = recAppendBytes(b, recTagCtx, r.Ctx)
	b = recAppendStr(b, recTagEventID, r.EventID)
	b = recAppendStr(b, recTagIdemKey, r.IdemKey)
	b = recAppendStr(b, recTagIdemHash, r.IdemHash)
	b = recAppendStr(b, recTagSource, r.Source)
	if r.Prev != 0 {
		b = recAppendUint(b, recTagPrev, r.Prev)
	}
	if r.Epoch != 0 {
		b = recAppendUint(b, recTagEpoch, r.Epoch)
	}
	for _, op := range r.Ops {
		b = append(b, recTagOp, op.typ)
		// Length-prefix the member: reserve space by encoding to a
		// temporary slice (members are small).
		m := appendRecord(nil, op)
		b = binary.AppendUvarint(b, uint64(len(m)))
		b = append(b, m...)
	}
	return b
}

func recAppendUint(b []byte, tag byte, v uint64) []byte {
	b = append(b, tag)
	return binary.AppendUvarint(b, v)
}

func recAppendStr(b []byte, tag byte, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func recAppendBytes(b []byte, tag byte, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

var errRecordTruncated = errors.New("record truncated")

// decodeRecord parses a record of type typ. Byte fields are copied: the
// input usually points into the WAL's mapping.
func decodeRecord(typ uint8, b []byte) (*record, error) {
	if _, ok := recTypeNames[typ]; !ok {
		return nil, fmt.Errorf("unknown record type %d", typ)
	}
	r := &record{typ: typ, Type: recTypeNames[typ]}
	for len(b) > 0 {
		tag := b[0]
		b = b[1:]
		if tag == recTagOp {
			if len(b) < 1 {
				return nil, errRecordTruncated
			}
			mt := b[0]
			m, rest, err := recTakeBytes(b[1:])
			if err != nil {
				return nil, err
			}
			if mt != recCreateInstance && mt != recApplyEvent && mt != recDeleteInstance {
				return nil, fmt.Errorf("batch member of type %d", mt)
			}
			op, err := decodeRecord(mt, m)
			if err != nil {
				return nil, fmt.Errorf("batch member %d: %w", len(r.Ops), err)
			}
			r.Ops = append(r.Ops, op)
			b = rest
			continue
		}
		if tag == recTagTime || tag == recTagVersion || tag == recTagPrev || tag == recTagEpoch {
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return nil, errRecordTruncated
			}
			b = b[n:]
			switch tag {
			case recTagTime:
				r.Time = int64(v)
			case recTagPrev:
				r.Prev = v
			case recTagEpoch:
				r.Epoch = v
			default:
				if v > 1<<32-1 {
					return nil, fmt.Errorf("version %d out of range", v)
				}
				r.Version = uint32(v)
			}
			continue
		}
		v, rest, err := recTakeBytes(b)
		if err != nil {
			return nil, err
		}
		b = rest
		switch tag {
		case recTagMachine:
			r.Machine = string(v)
		case recTagDef:
			r.Def = append([]byte(nil), v...)
		case recTagChecksum:
			r.Checksum = string(v)
		case recTagInstanceID:
			r.InstanceID = string(v)
		case recTagInitialState:
			r.InitialState = string(v)
		case recTagInitialCtx:
			r.InitialCtx = append([]byte(nil), v...)
		case recTagEvent:
			r.Event = string(v)
		case recTagFromState:
			r.FromState = string(v)
		case recTagToState:
			r.ToState = string(v)
		case recTagPayload:
			r.Payload = append([]byte(nil), v...)
		case recTagCtx:
			r.Ctx = append([]byte(nil), v...)
		case recTagEventID:
			r.EventID = string(v)
		case recTagIdemKey:
			r.IdemKey = string(v)
		case recTagIdemHash:
			r.IdemHash = string(v)
		case recTagSource:
			r.Source = string(v)
		default:
			return nil, fmt.Errorf("unknown record field %d", tag)
		}
	}
	return r, nil
}

func recTakeBytes(b []byte) (v, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, errRecordTruncated
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}
