-: proxy/worker.h proxy/core/arena.h proxy/core/str.h proxy/core/buf.h \
 proxy/core/list.h proxy/http/access_log.h proxy/core/err.h
proxy/core/arena.h:
proxy/core/str.h:
proxy/core/buf.h:
proxy/core/list.h:
proxy/http/access_log.h:
proxy/core/err.h:
