# bench/lib.sh - what the bench scripts share; sourced, not run.

# CPU seconds (user + system) a process and its threads used so far.
cpu_of() {
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); split($0, f, " ");
    printf "%.3f", (f[12] + f[13]) / hz }' "/proc/$1/stat"
}

# nginx_static_conf WORK CONNS: an nginx configuration serving WORK/www
# with sendfile on (one worker, CONNS connections and descriptors, logs and
# pid under WORK/nginx), listening on 127.0.0.1:PORT (the caller puts the
# port in with sed).
nginx_static_conf() {
  cat <<CONF
worker_processes 1;
worker_rlimit_nofile $2;
daemon off;
pid $1/nginx/nginx.pid;
error_log $1/nginx/error.log;
events { worker_connections $2; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:PORT;
    root $1/www;
  }
}
CONF
}
