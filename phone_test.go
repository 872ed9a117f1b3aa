package wxphone

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// phoneStubBody answers a successful exchange for testAppID.
const phoneStubBody = `{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`

func TestPhoneNumberLenientDecoding(t *testing.T) {
	t.Parallel()
	want := PhoneInfo{PhoneNumber: testPhone, PurePhoneNumber: testPhone, CountryCode: "86", Watermark: Watermark{AppID: testAppID, Timestamp: 1637744274}}
	tests := []struct {
		name, ct, body string
		want           PhoneInfo
	}{
		{"text/plain content type", "text/plain", phoneStubBody, want},
		{"no content type", "", phoneStubBody, want},
		{"countryCode number", "application/json",
			`{"errcode":0,"errmsg":"ok","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":86,"watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`, want},
		{"missing errcode and errmsg", "text/plain",
			`{"phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`, want},
		{"errcode as string", "text/plain",
			`{"errcode":"0","phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`, want},
		{"timestamp as string", "text/plain",
			`{"errcode":0,"phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":"1637744274","appid":"wx4f4bc4dec97d474b"}}}`, want},
		{"unknown fields everywhere", "text/plain",
			`{"errcode":0,"errmsg":"ok","new":[1,{"x":null}],"phone_info":{"extra":{"a":"b"},"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86","watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b","v":2}}}`, want},
		{"whitespace around body", "text/plain", "\r\n  " + phoneStubBody + "\n", want},
		{"escaped strings", "text/plain",
			`{"errcode":0,"phone_info":{"phoneNumber":"\u0031\u0033800138000","purePhoneNumber":"13800138000","countryCode":"\u0038\u0036","watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`, want},
		{"countryCode null", "text/plain",
			`{"errcode":0,"phone_info":{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":null,"watermark":{"timestamp":1637744274,"appid":"wx4f4bc4dec97d474b"}}}`,
			PhoneInfo{PhoneNumber: testPhone, PurePhoneNumber: testPhone, Watermark: want.Watermark}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			stub := newStub(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, tt.ct, tt.body) })
			c := stubClient(t, stub.URL)
			got, err := c.PhoneNumber(ctxTimeout(t, 10*time.Second), "code-0123456789abcdef")
			if err != nil {
				t.Fatalf("PhoneNumber: %v", err)
			}
			if diff := cmp.Diff(tt.want, *got); diff != "" {
				t.Errorf("PhoneInfo mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestFlexDecodingMatchesReference pins the hand-written fast paths to the
// behaviour of encoding/json and strconv they replace.
func TestFlexDecodingMatchesReference(t *testing.T) {
	t.Parallel()
	ints := []string{"0", "-0", "+5", "-5", "007", "1637744274", "999999999999999999", "-999999999999999999",
		"9223372036854775807", "-9223372036854775808", "9223372036854775808", "-9223372036854775809",
		"12345678901234567890", "", "-", "+", "1.5", "1e3", "0x10", "1_000", " 1", "١٢٣"}
	for _, s := range ints {
		want, err := strconv.ParseInt(s, 10, 64)
		got, ok := parseInt64([]byte(s))
		if ok != (err == nil) || (ok && got != want) {
			t.Errorf("parseInt64(%q) = %d, %v; strconv says %d, %v", s, got, ok, want, err)
		}
	}
	strs := []string{`"86"`, `"852"`, `""`, `"\u0038\u0036"`, `"a\"b"`, `"a\\b"`, "\"\xff\"", `"中国"`, `86`, `-1`, `8.6e1`, `null`, `true`, `{}`, `[]`}
	for _, in := range strs {
		var got flexString
		gotErr := json.Unmarshal([]byte(in), &got)
		// Reference: json's own string decoding, or the number's text.
		var ref string
		var refErr error
		switch {
		case strings.HasPrefix(in, `"`):
			refErr = json.Unmarshal([]byte(in), &ref)
		case in == "null":
		case in == "true" || in == "{}" || in == "[]":
			refErr = errors.New("not a string or number")
		default:
			var n json.Number
			refErr = json.Unmarshal([]byte(in), &n)
			ref = n.String()
		}
		if (gotErr == nil) != (refErr == nil) || string(got) != ref {
			t.Errorf("flexString(%s) = %q, %v; want %q, %v", in, got, gotErr, ref, refErr)
		}
	}
	for in, want := range map[string]int64{`1637744274`: 1637744274, `"1637744274"`: 1637744274, `"\u0031"`: 1, `null`: 0, `-3`: -3} {
		var got flexInt
		if err := json.Unmarshal([]byte(in), &got); err != nil || int64(got) != want {
			t.Errorf("flexInt(%s) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{`1.5`, `"x"`, `true`, `"1e3"`, `{}`} {
		var got flexInt
		if err := json.Unmarshal([]byte(in), &got); err == nil {
			t.Errorf("flexInt(%s) = %d; want an error", in, got)
		}
	}
}

func TestPhoneInfoUnmarshalJSON(t *testing.T) {
	t.Parallel()
	var p PhoneInfo
	in := `{"phoneNumber":"+852 51234567","purePhoneNumber":"51234567","countryCode":852,"watermark":{"appid":"wx4f4bc4dec97d474b","timestamp":"1477314187"},"extra":1}`
	if err := json.Unmarshal([]byte(in), &p); err != nil {
		t.Fatal(err)
	}
	want := PhoneInfo{PhoneNumber: "+852 51234567", PurePhoneNumber: "51234567", CountryCode: "852", Watermark: Watermark{AppID: testAppID, Timestamp: 1477314187}}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("PhoneInfo mismatch (-want +got):\n%s", diff)
	}
	if err := json.Unmarshal([]byte(`{"countryCode":true}`), &p); err == nil {
		t.Error("countryCode true accepted")
	}
}

func TestMaskPhone(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"13800138000", "138****8000"},
		{"+86 13800138000", "+86 138****8000"},
		{"+86-13800138000", "+86-138****8000"},
		{"+852 51234567", "+852 51****67"},
		{"+1 4155550123", "+1 41****23"},
		{"+8613800138000", "+861****8000"},
		{"008613800138000", "008****8000"},
		{"1234567", "12****67"},
		{"123456", "****"},
		{"1234", "****"},
		{"1", "****"},
		{"", ""},
		{"+", "+****"},
		{"+86 ", "+86 ****"},
		{"+86 123", "+86 ****"},
		{"１３８００１３８０００", "１３８****８０００"},
		{"电话号码是一二三四五六七", "电话号****四五六七"},
		{"\xff\xfe\xfd", "****"},
		{"138001380001234567890", "138****7890"},
	}
	for _, tt := range tests {
		got := MaskPhone(tt.in)
		if got != tt.want {
			t.Errorf("MaskPhone(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if len(tt.in) >= 7 && strings.Contains(got, tt.in) {
			t.Errorf("MaskPhone(%q) reveals the input", tt.in)
		}
	}
}
