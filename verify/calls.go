package verify

import (
	"context"
	"errors"
	"sync"
	"time"
)

// clerkCalls runs the calls to Clerk of the Verifiers that share it: one
// per credential, however many requests present it at the same time (the
// first starts it, the others join it), at most max at once (a request
// that would start one more is refused at once rather than queued), and
// each cancelled as soon as no request waits for it any more, rather than
// run to its timeout for nobody. A call's slot covers all it does: the
// look in a Store first, when there is one, and the call to Clerk.
type clerkCalls struct {
	slots chan struct{} // holds one token per call in flight

	mu      sync.Mutex
	running map[cacheKey]*clerkCall
}

// clerkCall is one call to Clerk and the requests waiting for it.
type clerkCall struct {
	waiting int                // requests waiting for the answer; guarded by clerkCalls.mu
	cancel  context.CancelFunc // ends the call
	done    chan struct{}      // closed once identity and err are set
	// The answer, set before done is closed.
	identity *Identity
	err      error
}

// asker asks Clerk about a credential.
type asker func(context.Context) (*Identity, error)

func newClerkCalls(max int) *clerkCalls {
	return &clerkCalls{slots: make(chan struct{}, max), running: make(map[cacheKey]*clerkCall)}
}

// errNoSlot is do's error when max calls are in flight already.
var errNoSlot = errors.New("as many calls to Clerk as allowed are in flight already")

// do returns what ask answers about the credential of key: from the call
// under way for it, or from a new one, if a slot is free (else errNoSlot,
// at once). ask runs in a goroutine of its own, with a context that keeps
// ctx's values but not its end, bounded by timeout, and cancelled once
// every request waiting for it has stopped. do returns when the call ends,
// or with ctx's error when ctx ends first (or has ended already: then no
// call is made).
func (c *clerkCalls) do(ctx context.Context, key cacheKey, timeout time.Duration, ask asker) (*Identity, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // gone already: no call for nobody
	}
	call, err := c.join(ctx, key, timeout, ask)
	if err != nil {
		return nil, err
	}
	select {
	case <-call.done:
		return call.identity, call.err
	case <-ctx.Done():
		c.leave(key, call)
		return nil, ctx.Err()
	}
}

// join waits for the call under way for key, or starts one.
func (c *clerkCalls) join(ctx context.Context, key cacheKey, timeout time.Duration, ask asker) (*clerkCall, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if call, ok := c.running[key]; ok {
		call.waiting++
		return call, nil
	}
	select {
	case c.slots <- struct{}{}:
	default:
		return nil, errNoSlot
	}
	callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	call := &clerkCall{waiting: 1, cancel: cancel, done: make(chan struct{})}
	c.running[key] = call
	go c.run(callCtx, key, call, ask)
	return call, nil
}

// run makes the call, then frees its slot.
func (c *clerkCalls) run(ctx context.Context, key cacheKey, call *clerkCall, ask asker) {
	call.identity, call.err = ask(ctx)
	<-c.slots
	call.cancel()
	c.mu.Lock()
	if c.running[key] == call {
		delete(c.running, key)
	}
	c.mu.Unlock()
	close(call.done)
}

// leave stops a request's wait; the last to leave cancels the call, and a
// request presenting the credential later starts a new one.
func (c *clerkCalls) leave(key cacheKey, call *clerkCall) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if call.waiting--; call.waiting > 0 {
		return
	}
	call.cancel()
	if c.running[key] == call {
		delete(c.running, key)
	}
}
