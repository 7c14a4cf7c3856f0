/* timer_list: timers that cost O(1) to start and stop, for the durations a worker uses over
 * and over (a route's 15 s timeout, the connection manager's 5 min stream idle timeout).
 *
 * A libev timer lives in a heap: starting one and stopping it again before it fires (what
 * almost every request does with its timeouts) is two heap operations that touch other
 * timers' memory, about 500 instructions per request for a stream's two timers. Timers that
 * all run for the same duration expire in the order they were started, so a FIFO list per
 * duration keeps them sorted for free (libev's manual, "Be smart about timeouts", method 4):
 * starting one appends it, stopping one unlinks it, and one libev timer per list waits for the
 * list's head. That timer is not moved when the head is stopped: it fires when the old head
 * would have, finds the new head not due yet and waits for it (at most one heap operation per
 * list and duration, instead of two per request).
 *
 * A worker has TIMER_LISTS lists. A duration gets a list while one is free or already serves
 * it (an empty list is free); past that, and for timer_list_start_heap, a timer is a plain
 * libev timer. Either way the callback is the ev_timer's own, called as libev would call it.
 * Deadlines are ev_now() based, as libev's are. Not thread-safe: one worker's. */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#define TIMER_LISTS 8

struct timer_list;

struct tl_timer {
    ev_timer w; /* callback, data; the timer itself when it is on libev's heap */
    struct tl_timer *prev, *next;
    struct timer_list *list; /* the list it is on; NULL when off every list */
    ev_tstamp due;           /* on a list: when it expires */
};

struct timer_list {
    uint64_t ms; /* the duration its timers run for; meaningful while head != NULL */
    struct tl_timer *head, *tail;
    ev_timer w; /* due when head is, or earlier */
    struct timer_lists *set;
};

struct timer_lists {
    struct ev_loop *loop;
    struct timer_list l[TIMER_LISTS];
};

void timer_lists_init(struct timer_lists *set, struct ev_loop *loop);

/* Stops the lists' libev timers; the lists must be empty. */
void timer_lists_deinit(struct timer_lists *set);

/* Like ev_timer_init: `cb` gets &t->w, whose data field is `data`. */
void tl_timer_init(struct tl_timer *t, void (*cb)(struct ev_loop *, ev_timer *, int), void *data);

/* (Re)starts `t` to fire `ms` milliseconds from ev_now(); on a list when one serves `ms`. */
void timer_list_start(struct timer_lists *set, struct tl_timer *t, uint64_t ms);

/* (Re)starts `t` on libev's heap, `after` seconds from now: for one-off durations (the rest of
 * a lazily checked idle timeout), which would only take a list from the durations that repeat. */
void timer_list_start_heap(struct timer_lists *set, struct tl_timer *t, ev_tstamp after);

void timer_list_stop_slow(struct timer_lists *set, struct tl_timer *t);

static inline bool tl_timer_active(const struct tl_timer *t)
{
    return t->list != NULL || ev_is_active(&t->w);
}

/* Stops `t` if it runs, as ev_timer_stop does (a pending callback is cleared too). */
static inline void timer_list_stop(struct timer_lists *set, struct tl_timer *t)
{
    if (t->list != NULL || ev_is_active(&t->w) || ev_is_pending(&t->w)) {
        timer_list_stop_slow(set, t);
    }
}
