package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"sitekit/app/internal/account"
	"sitekit/app/internal/config"
	"sitekit/app/internal/password"
	"sitekit/app/internal/redisdb"
)

// useradd creates an account from the command line, with the password read
// from the first line of stdin (never from the arguments, which other users
// of the host can see in ps). It is how admins get their accounts: public
// sign-up refuses the emails in ADMIN_EMAILS, and only an account made here
// carries the admin flag that admin rights need besides the listed email.
//
//	printf '%s\n' "$PASSWORD" | app useradd admin@example.com "Ada Admin"
func useradd(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	if len(args) != 2 {
		return errors.New(`usage: app useradd EMAIL NAME (the password on stdin)`)
	}
	email, name := account.NormalizeEmail(args[0]), strings.TrimSpace(args[1])
	if !strings.Contains(email, "@") || len(email) > 254 || name == "" || utf8.RuneCountInString(name) > 100 {
		return errors.New("useradd: give a valid email and a name of 1 to 100 characters")
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("useradd: read the password from stdin: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if n := utf8.RuneCountInString(pw); n < 12 || n > 128 {
		return errors.New("useradd: the password on stdin must be 12 to 128 characters")
	}

	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	rdb, err := redisdb.New(cfg.RedisURL, redisdb.Options{Timeout: cfg.RedisTimeout, PoolSize: 1})
	if err != nil {
		return err
	}
	defer rdb.Close()
	hash, err := password.NewHasher(password.Params, 1, time.Minute).Hash(ctx, pw)
	if err != nil {
		return err
	}
	u, err := account.NewStore(rdb, time.Now).CreateAdmin(ctx, email, name, hash)
	if err != nil {
		return fmt.Errorf("useradd: %w", err)
	}
	fmt.Fprintf(stdout, "created user %s (%s)\n", u.ID, u.Email)
	return nil
}
