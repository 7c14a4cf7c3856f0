/* list: intrusive circular doubly-linked list (the Linux kernel's shape). Embed a struct list
 * in an object and recover the object with LIST_ENTRY. An empty list points at itself. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct list {
    struct list *next;
    struct list *prev;
};

#define LIST_ENTRY(node, type, member) ((type *)((char *)(node)-offsetof(type, member)))
/* Iterates `it` over the nodes of `head`; the loop body must not unlink `it`. */
#define LIST_FOREACH(it, head) for ((it) = (head)->next; (it) != (head); (it) = (it)->next)
#define LIST_FOREACH_SAFE(it, tmp, head)                                                           \
    for ((it) = (head)->next, (tmp) = (it)->next; (it) != (head); (it) = (tmp), (tmp) = (it)->next)

static inline void list_init(struct list *l)
{
    l->next = l;
    l->prev = l;
}

static inline bool list_empty(const struct list *l)
{
    return l->next == l;
}

/* Is `n` linked into some list? (Only valid for nodes that were list_init'ed when unlinked.) */
static inline bool list_linked(const struct list *n)
{
    return n->next != n;
}

static inline void list_insert_tail(struct list *head, struct list *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static inline void list_insert_head(struct list *head, struct list *n)
{
    n->next = head->next;
    n->prev = head;
    head->next->prev = n;
    head->next = n;
}

/* Unlinks `n` and leaves it pointing at itself, so unlinking twice is harmless. */
static inline void list_remove(struct list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n;
    n->prev = n;
}

static inline struct list *list_first(const struct list *head)
{
    return head->next == head ? NULL : head->next;
}
