#include "proxy/core/timer_list.h"

#include <stddef.h>

/* The list's libev timer fired: expire every timer that is due, then wait for the next head.
 * A callback may start or stop timers on this list (its own included), so the head is read
 * again each time round. */
static void list_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct timer_list *l = w->data;
    ev_tstamp now = ev_now(loop);
    struct tl_timer *t;
    while ((t = l->head) != NULL && t->due <= now) {
        l->head = t->next;
        if (l->head != NULL) {
            l->head->prev = NULL;
        } else {
            l->tail = NULL;
        }
        t->next = NULL;
        t->list = NULL;
        void (*cb)(struct ev_loop *, ev_timer *, int) = ev_cb(&t->w);
        cb(loop, &t->w, EV_TIMER);
    }
    if (l->head != NULL && !ev_is_active(w)) {
        ev_timer_set(w, l->head->due - now, 0);
        ev_timer_start(loop, w);
    }
}

void timer_lists_init(struct timer_lists *set, struct ev_loop *loop)
{
    set->loop = loop;
    for (int i = 0; i < TIMER_LISTS; i++) {
        struct timer_list *l = &set->l[i];
        l->ms = 0;
        l->head = l->tail = NULL;
        l->set = set;
        ev_timer_init(&l->w, list_cb, 0, 0);
        l->w.data = l;
    }
}

void timer_lists_deinit(struct timer_lists *set)
{
    for (int i = 0; i < TIMER_LISTS; i++) {
        ev_timer_stop(set->loop, &set->l[i].w);
    }
}

void tl_timer_init(struct tl_timer *t, void (*cb)(struct ev_loop *, ev_timer *, int), void *data)
{
    ev_timer_init(&t->w, cb, 0, 0);
    t->w.data = data;
    t->prev = t->next = NULL;
    t->list = NULL;
    t->due = 0;
}

void timer_list_stop_slow(struct timer_lists *set, struct tl_timer *t)
{
    struct timer_list *l = t->list;
    if (l == NULL) {
        ev_timer_stop(set->loop, &t->w);
        return;
    }
    if (t->prev != NULL) {
        t->prev->next = t->next;
    } else {
        l->head = t->next;
    }
    if (t->next != NULL) {
        t->next->prev = t->prev;
    } else {
        l->tail = t->prev;
    }
    t->prev = t->next = NULL;
    t->list = NULL;
}

/* The list serving `ms`, else a free (empty) one taken for it, else NULL. */
static struct timer_list *list_for(struct timer_lists *set, uint64_t ms)
{
    struct timer_list *free_list = NULL;
    for (int i = 0; i < TIMER_LISTS; i++) {
        struct timer_list *l = &set->l[i];
        if (l->head == NULL) {
            if (free_list == NULL) {
                free_list = l;
            }
        } else if (l->ms == ms) {
            return l;
        }
    }
    if (free_list != NULL) {
        free_list->ms = ms;
    }
    return free_list;
}

void timer_list_start(struct timer_lists *set, struct tl_timer *t, uint64_t ms)
{
    timer_list_stop(set, t);
    struct timer_list *l = list_for(set, ms);
    ev_tstamp after = (ev_tstamp)ms / 1000.0;
    if (l == NULL) {
        ev_timer_set(&t->w, after, 0);
        ev_timer_start(set->loop, &t->w);
        return;
    }
    t->due = ev_now(set->loop) + after;
    t->list = l;
    t->next = NULL;
    t->prev = l->tail;
    if (l->tail != NULL) {
        l->tail->next = t;
        l->tail = t;
        return; /* the list's timer waits for an earlier head */
    }
    l->head = l->tail = t;
    /* The list was empty. Its timer may still wait for a head that was stopped: that one was
     * due no later than `t` when the list served this duration before; when it served another
     * (a longer one), it must be brought forward. */
    if (ev_is_active(&l->w) && ev_timer_remaining(set->loop, &l->w) <= after) {
        return;
    }
    ev_timer_stop(set->loop, &l->w);
    ev_timer_set(&l->w, after, 0);
    ev_timer_start(set->loop, &l->w);
}

void timer_list_start_heap(struct timer_lists *set, struct tl_timer *t, ev_tstamp after)
{
    timer_list_stop(set, t);
    ev_timer_set(&t->w, after, 0);
    ev_timer_start(set->loop, &t->w);
}
