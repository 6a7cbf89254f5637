-- wrk script: back-to-back logins of the benchmark user.
wrk.method = "POST"
wrk.body = '{"email":"bench@example.com","password":"bench-password"}'
wrk.headers["Content-Type"] = "application/json"
