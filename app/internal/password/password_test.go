package password

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestHashAndVerify(t *testing.T) {
	h := NewHasher(Params, 1, time.Second)
	ctx := context.Background()
	hash, err := h.Hash(ctx, "correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	// The PHC string names the algorithm and the parameters OWASP asks for.
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash = %q", hash)
	}
	if again, _ := h.Hash(ctx, "correct horse battery staple"); again == hash {
		t.Error("two hashes of one password are equal: the salt is not random")
	}
	for pw, want := range map[string]bool{"correct horse battery staple": true, "correct horse battery stapl": false, "": false} {
		ok, err := h.Verify(ctx, pw, hash)
		if err != nil || ok != want {
			t.Errorf("Verify(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
}

// With no user, Verify does a full hash's work and says no.
func TestVerifyWithoutUser(t *testing.T) {
	h := NewHasher(Params, 1, time.Second)
	real, _ := h.Hash(context.Background(), "correct horse battery staple")
	timeIt := func(hash string) time.Duration {
		start := time.Now()
		ok, err := h.Verify(context.Background(), "correct horse battery staple", hash)
		if err != nil || (ok != (hash != "")) {
			t.Fatalf("Verify(hash %q) = %v, %v", hash, ok, err)
		}
		return time.Since(start)
	}
	withUser, without := timeIt(real), timeIt("")
	// Generous bounds: the point is a full hash's work (not microseconds).
	if without < withUser/10 || without > withUser*10 {
		t.Errorf("verify without a user took %v, with one %v; want about the same", without, withUser)
	}
}

func TestBusy(t *testing.T) {
	h := NewHasher(Params, 1, 20*time.Millisecond)
	ctx := context.Background()
	// Hold the only slot, as a long hash would.
	if err := h.slots.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := h.Hash(ctx, "correct horse battery staple")
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Hash with no free slot = %v; want ErrBusy", err)
	}
	if waited := time.Since(start); waited < 20*time.Millisecond || waited > time.Second {
		t.Errorf("waited %v; want about the 20ms wait", waited)
	}
	h.slots.Release(1)
	if _, err := h.Hash(ctx, "correct horse battery staple"); err != nil {
		t.Errorf("Hash after the slot was freed: %v", err)
	}
}

func BenchmarkHash(b *testing.B) {
	h := NewHasher(Params, 0, time.Minute)
	for b.Loop() {
		if _, err := h.Hash(context.Background(), "correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}
