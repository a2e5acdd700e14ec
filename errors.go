package main

import "fmt"

// Error codes of the RCP protocol. Clients decode these into closed enums,
// so no other code may ever be sent.
const (
	codeUnsupportedProtocol  = "UNSUPPORTED_PROTOCOL"
	codeBadRequest           = "BAD_REQUEST"
	codeUnauthorized         = "UNAUTHORIZED"
	codeAuthFailed           = "AUTH_FAILED"
	codeNotFound             = "NOT_FOUND"
	codeMachineNotFound      = "MACHINE_NOT_FOUND"
	codeMachineVersionExists = "MACHINE_VERSION_EXISTS"
	codeMachineVersionLimit  = "MACHINE_VERSION_LIMIT_EXCEEDED"
	codeInstanceNotFound     = "INSTANCE_NOT_FOUND"
	codeInstanceExists       = "INSTANCE_EXISTS"
	codeInvalidTransition    = "INVALID_TRANSITION"
	codeGuardFailed          = "GUARD_FAILED"
	codeConflict             = "CONFLICT"
	codeWALIOError           = "WAL_IO_ERROR"
	codeInternalError        = "INTERNAL_ERROR"
	codeRateLimited          = "RATE_LIMITED"
)

// rcpError is the one error type that reaches the wire. Details is an
// object of context (field name, instance id, expected/actual...) and is
// omitted when empty.
type rcpError struct {
	Code    string
	Message string
	Details map[string]any
}

func (e *rcpError) Error() string { return e.Code + ": " + e.Message }

// retryable is derived from the code alone, as clients expect.
func (e *rcpError) retryable() bool {
	switch e.Code {
	case codeWALIOError, codeInternalError, codeRateLimited:
		return true
	}
	return false
}

// newError builds an error with a formatted message and no details.
func newError(code, format string, args ...any) *rcpError {
	return &rcpError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// with adds one detail and returns the error, for chaining.
func (e *rcpError) with(key string, value any) *rcpError {
	if e.Details == nil {
		e.Details = make(map[string]any, 2)
	}
	e.Details[key] = value
	return e
}

// badParam is the BAD_REQUEST for one request parameter; the field is
// named both in the message and in details.field.
func badParam(field, format string, args ...any) *rcpError {
	return newError(codeBadRequest, format, args...).with("field", field)
}
