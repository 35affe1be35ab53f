package accesslog

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"strconv"
	"time"
	"unicode/utf8"
)

// clfTime is %t's layout.
const clfTime = "02/Jan/2006:15:04:05 -0700"

// appendCombined appends e as a combined log format line:
// %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i".
// Quoted fields are escaped as nginx does (", \, control and non-ASCII bytes
// as \xHH), so a field never contains the quote that ends it.
func appendCombined(b []byte, e *Entry) []byte {
	b = orDash(b, e.Client)
	b = append(b, " - - ["...)
	b = e.Start.AppendFormat(b, clfTime)
	b = append(b, `] "`...)
	b = appendCLF(b, e.Method)
	b = append(b, ' ')
	b = appendCLF(b, e.URI)
	b = append(b, ' ')
	b = appendCLF(b, e.Proto)
	b = append(b, `" `...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, ' ')
	if e.BytesOut > 0 {
		b = strconv.AppendInt(b, e.BytesOut, 10)
	} else {
		b = append(b, '-') // %b: "-" for no bytes
	}
	b = append(b, ` "`...)
	b = orDash(b, e.Referer)
	b = append(b, `" "`...)
	b = orDash(b, e.UserAgent)
	return append(b, "\"\n"...)
}

// orDash appends a field escaped, or "-" when it is empty.
func orDash(b []byte, s string) []byte {
	if s == "" {
		return append(b, '-')
	}
	return appendCLF(b, s)
}

const hexDigits = "0123456789ABCDEF"

// appendCLF appends s with ", \, control bytes and bytes >= 0x7f escaped
// as \xHH.
func appendCLF(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			b = append(b, '\\', 'x', hexDigits[c>>4], hexDigits[c&0xf])
			continue
		}
		b = append(b, c)
	}
	return b
}

// appendJSON appends e as one JSON object and a newline.
func appendJSON(b []byte, e *Entry) []byte {
	b = append(b, `{"time":"`...)
	b = e.Start.AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","client":`...)
	b = appendJSONString(b, e.Client)
	b = append(b, `,"method":`...)
	b = appendJSONString(b, e.Method)
	b = append(b, `,"host":`...)
	b = appendJSONString(b, e.Host)
	b = append(b, `,"uri":`...)
	b = appendJSONString(b, e.URI)
	b = append(b, `,"protocol":`...)
	b = appendJSONString(b, e.Proto)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, `,"bytes_in":`...)
	b = strconv.AppendInt(b, e.BytesIn, 10)
	b = append(b, `,"bytes_out":`...)
	b = strconv.AppendInt(b, e.BytesOut, 10)
	b = append(b, `,"duration_ms":`...)
	b = appendMillis(b, e.Duration)
	b = append(b, `,"upstream_ms":`...)
	if e.Upstream < 0 {
		b = append(b, "null"...)
	} else {
		b = appendMillis(b, e.Upstream)
	}
	b = append(b, `,"backend":`...)
	b = appendJSONString(b, e.Backend)
	b = append(b, `,"retries":`...)
	b = strconv.AppendInt(b, int64(e.Retries), 10)
	b = append(b, `,"session":`...)
	b = appendJSONString(b, e.Session)
	b = append(b, `,"session_id":"`...)
	if e.SessionID != "" {
		b = AppendIDHash(b, e.SessionID)
	}
	b = append(b, `","request_id":`...)
	b = appendJSONString(b, e.RequestID)
	b = append(b, `,"user_agent":`...)
	b = appendJSONString(b, e.UserAgent)
	b = append(b, `,"referer":`...)
	b = appendJSONString(b, e.Referer)
	b = append(b, `,"tls":"`...)
	b = append(b, tlsVersion(e.TLS)...)
	return append(b, "\"}\n"...)
}

// AppendIDHash appends what logs show instead of a session id: the first
// 8 hex digits of its SHA-256, the same as sessionstore.ShortID (so access
// log lines and sessiongate's own logs name a session alike), without an
// allocation. A session id carries at least 128 random bits, so the hash
// cannot be turned back into it.
func AppendIDHash(b []byte, id string) []byte {
	sum := sha256.Sum256([]byte(id))
	return hex.AppendEncode(b, sum[:4])
}

// appendMillis appends d in milliseconds with three decimals.
func appendMillis(b []byte, d time.Duration) []byte {
	us := d.Microseconds()
	b = strconv.AppendInt(b, us/1000, 10)
	b = append(b, '.')
	f := us % 1000
	return append(b, byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10))
}

func tlsVersion(v uint16) string {
	switch v {
	case 0:
		return ""
	case tls.VersionTLS10:
		return "TLSv1.0"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return "unknown"
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}
