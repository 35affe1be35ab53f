package phpsession

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// benchSession is a typical logged-in session: a user id, a nested auth
// array, a cart of 20 items and a flash message, about 1.5 kB.
func benchSession() []byte {
	var b strings.Builder
	b.WriteString(`user|i:42;auth|a:2:{s:4:"user";a:2:{s:2:"id";i:42;s:5:"roles";a:2:{i:0;s:5:"admin";i:1;s:3:"ops";}}s:2:"at";i:1765000000;}`)
	b.WriteString(`cart|a:20:{`)
	for i := range 20 {
		fmt.Fprintf(&b, `i:%d;a:3:{s:3:"sku";s:8:"SKU-%04d";s:3:"qty";i:%d;s:5:"price";d:%d.99;}`, i, i, i%3+1, i+1)
	}
	b.WriteString(`}flash|s:22:"Your order was placed.";`)
	return []byte(b.String())
}

func BenchmarkDecode(b *testing.B) {
	in := benchSession()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(in, 0, PHP); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeField is what a scan looking for a user id pays per session.
func BenchmarkDecodeField(b *testing.B) {
	in := benchSession()
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		data, err := Decode(in, 0, PHP)
		if err != nil {
			b.Fatal(err)
		}
		if id, ok := Field(data, "auth.user.id"); !ok || id != "42" {
			b.Fatal(id, ok)
		}
	}
}

func BenchmarkField(b *testing.B) {
	data, err := Decode(benchSession(), 0, PHP)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		Field(data, "auth.user.id")
	}
}

func BenchmarkMarshal(b *testing.B) {
	data, err := Decode(benchSession(), 0, PHP)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(data); err != nil {
			b.Fatal(err)
		}
	}
}
