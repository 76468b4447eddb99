package verify

import (
	"context"
	"sync"
	"time"
)

// clerkCalls runs the calls to Clerk of the Verifiers that share it: one
// per credential, however many requests present it at the same time (the
// first starts it, the others join it), at most max at once, shared
// between the clients that start them by the rule of shares (a request
// that would start one more than that allows is refused at once rather
// than queued), and each cancelled as soon as no request waits for it any
// more, rather than run to its timeout for nobody. A call's slot covers
// all it does: the look in a Store first, when there is one, and the call
// to Clerk.
type clerkCalls struct {
	mu      sync.Mutex
	slots   shares // the calls in flight, by the client that started each
	running map[cacheKey]*clerkCall
}

// clerkCall is one call to Clerk and the requests waiting for it.
type clerkCall struct {
	client  string             // who started it, and holds its slot
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
	return &clerkCalls{slots: newShares(max), running: make(map[cacheKey]*clerkCall)}
}

// do returns what ask answers about the credential of key: from the call
// under way for it, or from a new one started for client, if client may
// have a slot (else, at once, an *Error with ReasonCallsLimited). ask runs
// in a goroutine of its own, with a context that keeps ctx's values but
// not its end, bounded by timeout, and cancelled once every request
// waiting for it has stopped. do returns when the call ends,
// or with ctx's error when ctx ends first (or has ended already: then no
// call is made).
func (c *clerkCalls) do(ctx context.Context, key cacheKey, client string, timeout time.Duration, ask asker) (*Identity, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // gone already: no call for nobody
	}
	call, err := c.join(ctx, key, client, timeout, ask)
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
func (c *clerkCalls) join(ctx context.Context, key cacheKey, client string, timeout time.Duration, ask asker) (*clerkCall, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if call, ok := c.running[key]; ok {
		call.waiting++
		return call, nil
	}
	if err := c.slots.take(client); err != nil {
		return nil, callsLimited(time.Second, "calls to Clerk in flight", err)
	}
	callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	call := &clerkCall{client: client, waiting: 1, cancel: cancel, done: make(chan struct{})}
	c.running[key] = call
	go c.run(callCtx, key, call, ask)
	return call, nil
}

// run makes the call, then frees its slot.
func (c *clerkCalls) run(ctx context.Context, key cacheKey, call *clerkCall, ask asker) {
	call.identity, call.err = ask(ctx)
	call.cancel()
	c.mu.Lock()
	c.slots.give(call.client)
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
