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
	ok := d.Members(func(key []byte) (uint64, bool) {
		switch string(key) {
		case "errcode":
			n, _, ok := d.Integer()
			out.ErrCode = flexInt(n)
			return 1, ok
		case "errmsg":
			var ok bool
			out.ErrMsg, ok = d.Str()
			return 2, ok
		case "phone_info":
			out.PhoneInfo = new(wirePhoneInfo)
			return 4, phoneInfoFast(&d, out.PhoneInfo)
		}
		return 0, !jsonscan.FoldsTo(key, "errcode", "errmsg", "phone_info") && d.SkipScalar()
	})
	if !ok || !d.End() {
		return false
	}
	*r = out
	return true
}

// phoneInfoFast decodes the phone_info object.
func phoneInfoFast(d *jsonscan.Scanner, w *wirePhoneInfo) bool {
	return d.Members(func(key []byte) (uint64, bool) {
		switch string(key) {
		case "phoneNumber":
			s, ok := d.Str()
			w.PhoneNumber = PhoneNumber(s)
			return 1, ok
		case "purePhoneNumber":
			s, ok := d.Str()
			w.PurePhoneNumber = PhoneNumber(s)
			return 2, ok
		case "countryCode":
			// A string, or a number kept as its text (flexString).
			var s string
			var ok bool
			if d.Peek() == '"' {
				s, ok = d.Str()
			} else {
				_, s, ok = d.Integer()
			}
			w.CountryCode = flexString(s)
			return 4, ok
		case "watermark":
			return 8, watermarkFast(d, w)
		}
		return 0, !jsonscan.FoldsTo(key, "phoneNumber", "purePhoneNumber", "countryCode", "watermark") && d.SkipScalar()
	})
}

// watermarkFast decodes phone_info.watermark.
func watermarkFast(d *jsonscan.Scanner, w *wirePhoneInfo) bool {
	return d.Members(func(key []byte) (uint64, bool) {
		switch string(key) {
		case "appid":
			var ok bool
			w.Watermark.AppID, ok = d.Str()
			return 1, ok
		case "timestamp":
			n, _, ok := d.Integer()
			w.Watermark.Timestamp = flexInt(n)
			return 2, ok
		}
		return 0, !jsonscan.FoldsTo(key, "appid", "timestamp") && d.SkipScalar()
	})
}
