/* Forced into every file cppcheck checks (make lint, --include).  cppcheck
 * runs without the system headers (fast, and it has no models for most of
 * our libraries), so the few library macros that change control flow are
 * spelled out here:
 *  - jansson's iteration macros, which otherwise read as unknown macros;
 *  - cmocka's assertions, which end the test when they fail: written as
 *    abort() so that cppcheck does not report, for example, an index that
 *    an assert_true() on the line before has already ruled out.
 * Never compiled into anything. */
#define json_object_foreach(object, key, value) \
    for (key = json_object_iter_key(json_object_iter(object)); \
         key && (value = json_object_iter_value(json_object_key_to_iter(key))); \
         key = json_object_iter_key(json_object_iter_next(object, json_object_key_to_iter(key))))
#define json_array_foreach(array, index, value) \
    for (index = 0; index < json_array_size(array) && (value = json_array_get(array, index)); index++)
#define assert_true(c)          do { if (!(c)) abort(); } while (0)
#define assert_false(c)         do { if (c) abort(); } while (0)
#define assert_non_null(c)      do { if (!(c)) abort(); } while (0)
#define assert_null(c)          do { if (c) abort(); } while (0)
#define assert_int_equal(a, b)  do { if ((a) != (b)) abort(); } while (0)
