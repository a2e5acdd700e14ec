package main

import "time"

// Temporary stand-in until metrics.go lands.
type metrics struct{}

func newMetrics() *metrics                                  { return &metrics{} }
func (m *metrics) request(op, code string, d time.Duration) {}
func (m *metrics) connOpened()                              {}
func (m *metrics) connClosed()                              {}
func (m *metrics) connRejected()                            {}
func (m *metrics) subscriptionAdded(kind string)            {}
func (m *metrics) subscriptionRemoved(kind string)          {}
func (m *metrics) eventsForwarded(kind string, n int)       {}
func (m *metrics) fsync(d time.Duration, records int)       {}
func (m *metrics) authFailure()                             {}
