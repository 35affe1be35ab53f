//go:build !linux

package h1

import "time"

// parkAfter: off Linux connections are never parked (see park.go).
const parkAfter = 0

type parker struct{}

func (c *conn) canPark() bool                           { return false }
func (s *Server) park(c *conn, deadline time.Time) bool { return false }
func (s *Server) unpark()                               {}
