package wxphone

import (
	"encoding/json"
	"reflect"
	"testing"
)

// Answers WeChat sends (and the emulator imitates): each must take the
// fast path, and decode as encoding/json decodes it.
var fastAnswers = []string{
	`{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":1637744274,"appid":"wx0123456789abcdef"}}}`,
	`{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":86,"watermark":{"timestamp":1637744274,"appid":"wx0123456789abcdef"}}}`,
	"{\n  \"errcode\": 0,\n  \"errmsg\": \"ok\",\n  \"phone_info\": {\n    \"phoneNumber\": \"+1 2025550123\",\n    \"purePhoneNumber\": \"2025550123\",\n    \"countryCode\": 1,\n    \"watermark\": {\"timestamp\": 1637744274, \"appid\": \"wx0123456789abcdef\"}\n  }\n}\n",
	`{"errcode":40029,"errmsg":"invalid code, rid: 6475c2a0-0b3c7a52-3ad1e1c9"}`,
	`{"errcode":-1,"errmsg":"system error"}`,
	`{"errcode":45011,"errmsg":"api minute-quota reach limit  mustslower  retry next minute"}`,
	`{"errcode":40001,"errmsg":"invalid credential, access_token is invalid or not latest 中文"}`,
	`{"errcode":0,"errmsg":"ok","phone_info":{}}`,
	`{"errcode":0}`,
	`{}`,
	`{"errcode":0,"errmsg":"ok","extra":"x","n":12,"flag":true,"off":false,"phone_info":{"phoneNumber":"1","new":7,"watermark":{"appid":"a","more":"b"}}}`,
}

// Inputs the fast path leaves to encoding/json (each for a different
// reason); decodeBody must still decode them as encoding/json does.
var slowAnswers = []string{
	`{"errcode":"0","errmsg":"ok"}`,                                         // a string errcode
	`{"errcode":0,"errmsg":"o\u006b"}`,                                      // an escape
	`{"errcode":0,"errmsg":null}`,                                           // a null
	`{"errcode":0,"errcode":40029}`,                                         // a repeated key
	`{"ErrCode":40029}`,                                                     // a key in another case
	`{"errcode":0,"phone_info":{"watermar\u212a":{"appid":"a"}}}`,           // a key that folds (Kelvin sign)
	"{\"errcode\":0,\"phone_info\":{\"watermar\u212a\":{\"appid\":\"a\"}}}", // the same, unescaped
	`{"errcode":0,"extra":{"a":1}}`,                                         // a nested unknown value
	`{"errcode":0,"extra":[1]}`,                                             // an array
	`{"errcode":0,"extra":1.5}`,                                             // a fraction
	`{"errcode":0,"phone_info":{"countryCode":8.6e1}}`,                      // an exponent
	`{"errcode":0,"phone_info":null}`,                                       // a null object
	`{"errcode":0,"phone_info":{"phoneNumber":"1"},"phone_info":{}}`,        // a repeated object
	"{\"errcode\":0,\"errmsg\":\"\xff\"}",                                   // invalid UTF-8
	`{"errcode":0,"errmsg":"ok"} x`,                                         // trailing data
	`{"errcode":0,"errmsg":"ok"`,                                            // truncated
	`{"errcode":0,}`,                                                        // a trailing comma
	`{"errcode":01}`,                                                        // a leading zero
	`{"errcode":1234567890123456789}`,                                       // 19 digits
	`{"errcode":0,"phone_info":{"phoneNumber":13800138000}}`,                // a number for a string
	`{"errcode":0,"phone_info":{"watermark":{"timestamp":"1637744274"}}}`,   // a string timestamp
}

// decodeReference is what encoding/json makes of b.
func decodeReference(b []byte) (phoneResp, error) {
	var r phoneResp
	err := json.Unmarshal(b, &r)
	return r, err
}

func TestPhoneAnswerFastPath(t *testing.T) {
	for _, a := range fastAnswers {
		var got phoneResp
		if !got.decodeFast([]byte(a)) {
			t.Errorf("fast path refused %q", a)
			continue
		}
		want, err := decodeReference([]byte(a))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: fast path %+v, encoding/json %+v (%v)", a, got, want, err)
		}
	}
	for _, a := range slowAnswers {
		got := phoneResp{envelope: envelope{ErrMsg: "untouched"}}
		if got.decodeFast([]byte(a)) {
			t.Errorf("fast path took %q", a)
		}
		if got.ErrMsg != "untouched" || got.ErrCode != 0 || got.PhoneInfo != nil {
			t.Errorf("a refused input changed the answer: %+v", got)
		}
		// Through decodeBody, encoding/json decides.
		var via phoneResp
		err := decodeBody(OpPhoneNumber, []byte(a), &via)
		want, werr := decodeReference([]byte(a))
		if (err == nil) != (werr == nil) || err == nil && !reflect.DeepEqual(via, want) {
			t.Errorf("%q: decodeBody %+v (%v), encoding/json %+v (%v)", a, via, err, want, werr)
		}
	}
}

// TestPhoneAnswerFastAllocs pins what the fast path buys: the whole answer
// in one string, and the phone_info struct when there is one.
func TestPhoneAnswerFastAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	b := []byte(fastAnswers[0])
	n := testing.AllocsPerRun(200, func() {
		var r phoneResp
		if !r.decodeFast(b) {
			t.Fatal("refused")
		}
	})
	if n > 2 {
		t.Fatalf("%v allocations per decode, want at most 2", n)
	}
	b = []byte(fastAnswers[3]) // an errcode answer: no phone_info to allocate
	if n := testing.AllocsPerRun(200, func() {
		var r phoneResp
		if !r.decodeFast(b) {
			t.Fatal("refused")
		}
	}); n > 1 {
		t.Fatalf("%v allocations to decode an errcode answer, want at most 1", n)
	}
}

// FuzzPhoneAnswerFast: whatever the input, the fast path either refuses it
// (leaving the answer untouched) or decodes exactly what encoding/json
// decodes, without an error.
func FuzzPhoneAnswerFast(f *testing.F) {
	for _, a := range append(append([]string{}, fastAnswers...), slowAnswers...) {
		f.Add([]byte(a))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got phoneResp
		if !got.decodeFast(b) {
			if !reflect.DeepEqual(got, phoneResp{}) {
				t.Fatalf("refused %q but changed the answer: %+v", b, got)
			}
			return
		}
		want, err := decodeReference(b)
		if err != nil {
			t.Fatalf("fast path accepted %q, which encoding/json refuses: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: fast path %+v, encoding/json %+v", b, got, want)
		}
	})
}

func BenchmarkPhoneAnswerDecode(b *testing.B) {
	a := []byte(fastAnswers[1])
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r phoneResp
			if !r.decodeFast(a) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r phoneResp
			if err := json.Unmarshal(a, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
