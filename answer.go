package wxphone

import "github.com/wxphone/wxphone/internal/jsonscan"

// The phone answer's common shapes are decoded here without reflection:
// encoding/json's reflective decoder was the largest single cost of an
// exchange in wxphone serve's CPU profile, with the stack growth its depth
// forced on every exchange goroutine (docs/benchmarks.md). decodeFast reads
// only what internal/jsonscan reads and reports anything else (an escape, a
// null, a repeated key, a key that differs from a field name only in case,
// a nested unknown value, any syntax error) as not handled; decodeBody then
// uses encoding/json, which stays the reference. FuzzPhoneAnswerFast checks
// that every input this path accepts decodes to exactly what encoding/json
// gives, and TestPhoneAnswerFastPath that WeChat's usual answers take it.

// decodeFast decodes b, a whole answer, into r and reports whether it
// could; when it cannot, r is left as it was.
func (r *phoneResp) decodeFast(b []byte) bool {
	var d jsonscan.Scanner
	d.Reset(b)
	var out phoneResp
	var info wirePhoneInfo
	var seen, bit uint8
	more, ok := d.Object()
	for ; ok && more; more = d.NextMember() {
		var key []byte
		if key, ok = d.Key(); !ok {
			break
		}
		switch string(key) {
		case "errcode":
			bit = 1
			var n int64
			n, _, ok = d.Integer()
			out.ErrCode = flexInt(n)
		case "errmsg":
			bit = 2
			out.ErrMsg, ok = d.Str()
		case "phone_info":
			bit = 4
			ok = phoneInfoFast(&d, &info)
			out.PhoneInfo = &info
		default:
			bit = 0
			ok = !jsonscan.FoldsTo(key, "errcode", "errmsg", "phone_info") && d.SkipScalar()
		}
		ok = ok && seen&bit == 0
		seen |= bit
	}
	if !ok || !d.End() {
		return false
	}
	*r = out
	return true
}

// phoneInfoFast decodes the phone_info object.
func phoneInfoFast(d *jsonscan.Scanner, w *wirePhoneInfo) bool {
	var seen, bit uint8
	more, ok := d.Object()
	for ; ok && more; more = d.NextMember() {
		var key []byte
		if key, ok = d.Key(); !ok {
			break
		}
		var s string
		switch string(key) {
		case "phoneNumber":
			bit = 1
			s, ok = d.Str()
			w.PhoneNumber = PhoneNumber(s)
		case "purePhoneNumber":
			bit = 2
			s, ok = d.Str()
			w.PurePhoneNumber = PhoneNumber(s)
		case "countryCode":
			// A string, or a number kept as its text (flexString).
			bit = 4
			if d.Peek() == '"' {
				s, ok = d.Str()
			} else {
				_, s, ok = d.Integer()
			}
			w.CountryCode = flexString(s)
		case "watermark":
			bit = 8
			ok = watermarkFast(d, w)
		default:
			bit = 0
			ok = !jsonscan.FoldsTo(key, "phoneNumber", "purePhoneNumber", "countryCode", "watermark") && d.SkipScalar()
		}
		ok = ok && seen&bit == 0
		seen |= bit
	}
	return ok && !d.Failed()
}

// watermarkFast decodes phone_info.watermark.
func watermarkFast(d *jsonscan.Scanner, w *wirePhoneInfo) bool {
	var seen, bit uint8
	more, ok := d.Object()
	for ; ok && more; more = d.NextMember() {
		var key []byte
		if key, ok = d.Key(); !ok {
			break
		}
		switch string(key) {
		case "appid":
			bit = 1
			w.Watermark.AppID, ok = d.Str()
		case "timestamp":
			bit = 2
			var n int64
			n, _, ok = d.Integer()
			w.Watermark.Timestamp = flexInt(n)
		default:
			bit = 0
			ok = !jsonscan.FoldsTo(key, "appid", "timestamp") && d.SkipScalar()
		}
		ok = ok && seen&bit == 0
		seen |= bit
	}
	return ok && !d.Failed()
}
