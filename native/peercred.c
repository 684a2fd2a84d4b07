// getPeerCred(fd) -> { pid, uid, gid }: the credentials of the process at the other end of a
// connected unix socket, as recorded by the kernel at connect() time (SO_PEERCRED).
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <errno.h>
#include <node_api.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define CHECK(call) do { if ((call) != napi_ok) return NULL; } while (0)

static napi_value Throw(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static napi_value GetPeerCred(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out, v;
  napi_valuetype type;
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_typeof(env, argv[0], &type) != napi_ok || type != napi_number) {
    napi_throw_type_error(env, NULL, "getPeerCred: fd must be a number");
    return NULL;
  }
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  if (fd < 0) return Throw(env, "getPeerCred: invalid fd", EBADF);
  // Only unix sockets carry real peer credentials; on e.g. TCP the kernel reports the overflow
  // uid (65534) instead of failing, which must never be mistaken for a real peer.
  int domain = -1;
  socklen_t dlen = sizeof domain;
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) != 0)
    return Throw(env, "getsockopt(SO_DOMAIN)", errno);
  if (domain != AF_UNIX) return Throw(env, "getPeerCred: not a unix socket", EAFNOSUPPORT);
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return Throw(env, "getsockopt(SO_PEERCRED)", errno);
  if (len != sizeof cred) return Throw(env, "getsockopt(SO_PEERCRED): short read", EINVAL);
  CHECK(napi_create_object(env, &out));
  CHECK(napi_create_int32(env, cred.pid, &v));
  CHECK(napi_set_named_property(env, out, "pid", v));
  CHECK(napi_create_uint32(env, cred.uid, &v));
  CHECK(napi_set_named_property(env, out, "uid", v));
  CHECK(napi_create_uint32(env, cred.gid, &v));
  CHECK(napi_set_named_property(env, out, "gid", v));
  return out;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  napi_value fn;
  CHECK(napi_create_function(env, "getPeerCred", NAPI_AUTO_LENGTH, GetPeerCred, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "getPeerCred", fn));
  return exports;
}
