/*!
 * contact-monitor tracker: a Mautic-compatible mtc.js.
 *
 * Embed it with Mautic's loader snippet:
 *
 *   (function(w,d,t,u,n,a,m){w['MauticTrackingObject']=n;
 *       w[n]=w[n]||function(){(w[n].q=w[n].q||[]).push(arguments)},a=d.createElement(t),
 *       m=d.getElementsByTagName(t)[0];a.async=1;a.src=u;m.parentNode.insertBefore(a,m)
 *   })(window,document,'script','https://your-server/mtc.js','mt');
 *   mt('send', 'pageview');
 *
 * API: mt('send', 'pageview', [params], [{onload: fn(detail), onerror: fn()}])
 * - params add to or override what is collected automatically (email, firstname, tags, ...);
 * - onload runs once the hit is recorded, with Mautic's detail {event, params, response} that
 *   also carries the server's JSON itself (detail.id === detail.response.id); after the image
 *   fallback {event, params, image: true};
 * - onerror runs when neither the JSON endpoint nor the image could deliver it.
 * Pageviews are delivered one after the other, in the order of the mt() calls.
 *
 * window.MauticJS: what pages written for Mautic's mtc.js call (README, "MauticJS"):
 * onFirstEventDelivery, beforeFirstEventDelivery, getTrackedContact, setTrackedContact,
 * appendTrackedContact, makeCORSRequest, createCORSRequest, serialize, parseTextToJSON,
 * insertScript, insertStyle, documentReady, iterateCollection, dispatchEvent, guid, log,
 * setCookie, getInput, ensureEventContext; DOM events on document: mauticPageEventDelivered
 * (detail {event, params, response} or {event, params, image: true}) after each delivery, and
 * eventAddedToMauticQueue (detail: the mt() arguments) for each mt() call after this loads.
 *
 * Delivery: POST /mtc/event with credentials (CORS; the server must list this site in
 * CM_CORS_ORIGINS). When CORS is refused or fails, GET /mtracking.gif with the same data.
 * After a CORS delivery the device id is kept in localStorage and sent as `mautic_device_id`
 * (the visitor stays the same contact when third-party cookies are blocked), and the first-party
 * cookies `mtc_id` (contact id, for the site's server-side code) and `mautic_device_id` are set.
 */
(function (window, document) {
    'use strict';

    // Filled in by the server that serves this file: its own host and scheme.
    var SERVER_HOST = '__CM_SERVER_HOST__';
    var SERVER_SCHEME = '__CM_SERVER_SCHEME__';
    var VERSION = '__CM_VERSION__';

    // Mautic's rule: a page served over https always talks https to the tracker.
    var base = (window.location.protocol === 'https:' ? 'https:' : SERVER_SCHEME) + '//' + SERVER_HOST;
    var name = window.MauticTrackingObject || 'mt';
    var queued = (window[name] && window[name].q) || [];
    var counter = 0;
    var corsAllowed = true;
    var delivery = Promise.resolve();
    var adblockCache;

    // ---- storage ------------------------------------------------------------------------------

    function storageGet(key) {
        try {
            return window.localStorage.getItem(key);
        } catch (e) {
            return null; // storage disabled (private mode, sandboxed frame)
        }
    }

    function storageSet(key, value) {
        try {
            window.localStorage.setItem(key, value);
        } catch (e) {
            warn('could not keep ' + key + ' in localStorage');
        }
    }

    function setCookie(key, value) {
        var secure = window.location.protocol === 'https:' ? '; Secure' : '';
        document.cookie = key + '=' + encodeURIComponent(value) + '; path=/; SameSite=Lax' + secure;
    }

    function warn(message) {
        if (window.console && window.console.warn) {
            window.console.warn('mtc.js: ' + message);
        }
    }

    // ---- what is collected automatically ------------------------------------------------------

    function timeZone() {
        try {
            return Intl.DateTimeFormat().resolvedOptions().timeZone || '';
        } catch (e) {
            return '';
        }
    }

    // Mautic's values: Windows, MacOS, UNIX, Linux or Unknown OS (the last match wins).
    function platform() {
        var version = window.navigator.appVersion || '';
        var found = 'Unknown OS';
        if (version.indexOf('Win') !== -1) { found = 'Windows'; }
        if (version.indexOf('Mac') !== -1) { found = 'MacOS'; }
        if (version.indexOf('X11') !== -1) { found = 'UNIX'; }
        if (version.indexOf('Linux') !== -1) { found = 'Linux'; }
        return found;
    }

    function doNotTrack() {
        var nav = window.navigator;
        var value = nav.doNotTrack || window.doNotTrack || nav.msDoNotTrack;
        return value === '1' || value === 'yes' || value === 1 || nav.globalPrivacyControl === true;
    }

    // A bait element with class names that ad blockers hide; hidden means an ad blocker is active.
    function adblock() {
        if (adblockCache !== undefined) {
            return adblockCache;
        }
        var parent = document.body || document.documentElement;
        try {
            var bait = document.createElement('div');
            bait.className = 'adsbox ad-banner ad-placement pub_300x250 textads banner-ads';
            bait.setAttribute('aria-hidden', 'true');
            bait.style.cssText = 'position:absolute;left:-9999px;top:-9999px;width:10px;height:10px;';
            bait.innerHTML = '&nbsp;';
            parent.appendChild(bait);
            var style = window.getComputedStyle ? window.getComputedStyle(bait) : null;
            adblockCache = bait.offsetHeight === 0 ||
                (style !== null && (style.display === 'none' || style.visibility === 'hidden'));
            parent.removeChild(bait);
        } catch (e) {
            adblockCache = false;
        }
        return adblockCache;
    }

    // cyrb53 (public domain): a fast 53-bit string hash. Two seeds give a 106-bit fingerprint.
    function cyrb53(text, seed) {
        var h1 = 0xdeadbeef ^ seed;
        var h2 = 0x41c6ce57 ^ seed;
        for (var i = 0; i < text.length; i++) {
            var ch = text.charCodeAt(i);
            h1 = Math.imul(h1 ^ ch, 2654435761);
            h2 = Math.imul(h2 ^ ch, 1597334677);
        }
        h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
        h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
        var value = 4294967296 * (2097151 & h2) + (h1 >>> 0);
        return ('00000000000000' + value.toString(16)).slice(-14);
    }

    // Stable components of this browser on this device: no canvas, audio or font probing.
    function fingerprint() {
        var nav = window.navigator;
        var screen = window.screen || {};
        var components = [
            nav.userAgent,
            nav.language,
            (nav.languages || []).join(','),
            nav.platform,
            screen.width + 'x' + screen.height,
            screen.colorDepth,
            window.devicePixelRatio,
            timeZone(),
            nav.hardwareConcurrency,
            nav.deviceMemory,
            nav.maxTouchPoints,
            nav.cookieEnabled
        ].join('~');
        return cyrb53(components, 1) + cyrb53(components, 2);
    }

    function collect() {
        var nav = window.navigator;
        var screen = window.screen || {};
        var language = nav.language || nav.userLanguage || '';
        return {
            page_title: document.title,
            page_language: language,
            preferred_locale: language.replace('-', '_'),
            page_referrer: document.referrer,
            page_url: window.location.href,
            counter: counter++,
            timezone_offset: new Date().getTimezoneOffset(),
            timezone: timeZone(),
            resolution: screen.width + 'x' + screen.height,
            platform: platform(),
            do_not_track: doNotTrack(),
            adblock: adblock(),
            fingerprint: fingerprint()
        };
    }

    // ---- window.MauticJS: the API of Mautic's mtc.js that public pages use ----------------------

    var MauticJS = window.MauticJS = window.MauticJS || {};
    MauticJS.contactIdUrl = base + '/mtc';
    MauticJS.pageTrackingUrl = base + '/mtracking.gif';
    MauticJS.pageTrackingCORSUrl = base + '/mtc/event';
    MauticJS.inputQueue = [];
    MauticJS.postEventDeliveryQueue = [];
    MauticJS.preEventDeliveryQueue = [];
    MauticJS.firstDeliveryMade = false;
    MauticJS.beforeFirstDeliveryMade = false;
    MauticJS.mtcSet = false;

    MauticJS.serialize = function (obj) {
        return typeof obj === 'string' ? obj : serialize(obj);
    };
    MauticJS.parseTextToJSON = function (text) {
        try {
            return JSON.parse(text);
        } catch (e) {
            return text;
        }
    };
    MauticJS.documentReady = function (f) {
        if (document.readyState === 'loading') {
            document.addEventListener('DOMContentLoaded', function () { f(); });
        } else {
            f();
        }
    };
    MauticJS.iterateCollection = function (collection) {
        return function (f) {
            for (var i = 0; collection[i]; i++) {
                f(collection[i], i);
            }
        };
    };
    MauticJS.log = function () {
        if (window.console) {
            window.console.log(Array.prototype.slice.call(arguments));
        }
    };
    MauticJS.setCookie = function (key, value) {
        setCookie(key, value);
    };
    MauticJS.dispatchEvent = function (eventName, detail) {
        document.dispatchEvent(new window.CustomEvent(eventName, {detail: detail}));
    };
    MauticJS.guid = function () {
        function s4() {
            return Math.floor((1 + Math.random()) * 0x10000).toString(16).substring(1);
        }
        return s4() + s4() + '-' + s4() + '-' + s4() + '-' + s4() + '-' + s4() + s4() + s4();
    };
    MauticJS.insertScript = function (url) {
        var script = document.createElement('script');
        script.async = true;
        script.src = url;
        document.getElementsByTagName('head')[0].appendChild(script);
    };
    MauticJS.insertStyle = function (url) {
        var link = document.createElement('link');
        link.rel = 'stylesheet';
        link.type = 'text/css';
        link.href = url;
        document.getElementsByTagName('head')[0].appendChild(link);
    };
    MauticJS.appendTrackedContact = function (data) {
        var deviceId = storageGet('mautic_device_id');
        if (deviceId && storageGet('mtc_id')) {
            data.mautic_device_id = deviceId;
        }
        return data;
    };
    MauticJS.createCORSRequest = function (method, url) {
        var xhr = new window.XMLHttpRequest();
        xhr.open(method.toUpperCase(), url, true);
        return xhr;
    };
    // As Mautic's: form-encoded, with credentials; success(response, xhr) on 200, else
    // error(response, xhr); the response parsed as JSON when it is JSON.
    MauticJS.makeCORSRequest = function (method, url, data, success, error) {
        var query = MauticJS.serialize(MauticJS.appendTrackedContact(data || {}));
        if (method.toUpperCase() === 'GET') {
            url = url + (url.indexOf('?') === -1 ? '?' : '&') + query;
            query = null;
        }
        var xhr = MauticJS.createCORSRequest(method, url);
        xhr.withCredentials = true;
        xhr.setRequestHeader('X-Requested-With', 'XMLHttpRequest');
        if (query !== null) {
            xhr.setRequestHeader('Content-Type', 'application/x-www-form-urlencoded');
        }
        xhr.onreadystatechange = function () {
            if (xhr.readyState === 4) {
                var response = MauticJS.parseTextToJSON(xhr.responseText);
                var callback = xhr.status === 200 ? success : error;
                if (typeof callback === 'function') {
                    callback(response, xhr);
                }
            }
        };
        xhr.send(query);
        return xhr;
    };
    MauticJS.setTrackedContact = function (response) {
        if (response && response.id) {
            remember(response);
            MauticJS.mtcSet = true;
        }
    };
    // The contact this browser is (GET /mtc), kept as a delivery would keep it.
    MauticJS.getTrackedContact = function () {
        if (MauticJS.mtcSet) {
            return;
        }
        MauticJS.makeCORSRequest('GET', MauticJS.contactIdUrl, {}, function (response) {
            MauticJS.setTrackedContact(response);
        });
    };
    // f(detail) once the first page view is delivered (at once if it was already).
    MauticJS.onFirstEventDelivery = function (f) {
        if (MauticJS.firstDeliveryMade) {
            call(f, {});
        } else {
            MauticJS.postEventDeliveryQueue.push(f);
        }
    };
    // f(params) just before the first page view is sent: it may add parameters to it.
    MauticJS.beforeFirstEventDelivery = function (f) {
        MauticJS.preEventDeliveryQueue.push(f);
    };
    MauticJS.getInput = function (task, type) {
        var matches = [];
        for (var i = 0; i < MauticJS.inputQueue.length; i++) {
            if (MauticJS.inputQueue[i][0] === task && MauticJS.inputQueue[i][1] === type) {
                matches.push(MauticJS.inputQueue[i]);
            }
        }
        return matches;
    };
    MauticJS.ensureEventContext = function (event, context0, context1) {
        return typeof event.detail !== 'undefined' && event.detail[0] === context0 && event.detail[1] === context1;
    };

    // ---- delivery -----------------------------------------------------------------------------

    function serialize(data) {
        var parts = [];
        for (var key in data) {
            if (Object.prototype.hasOwnProperty.call(data, key) && data[key] !== undefined && data[key] !== null) {
                var value = data[key];
                if (Object.prototype.toString.call(value) === '[object Array]') {
                    for (var i = 0; i < value.length; i++) {
                        parts.push(encodeURIComponent(key + '[]') + '=' + encodeURIComponent(value[i]));
                    }
                } else {
                    parts.push(encodeURIComponent(key) + '=' + encodeURIComponent(value));
                }
            }
        }
        return parts.join('&');
    }

    function postEvent(data) {
        if (!corsAllowed || !window.fetch) {
            return Promise.reject(new Error('CORS not available'));
        }
        // X-Requested-With makes the browser ask first (preflight): a site the server does not
        // allow is stopped before anything is recorded, and the image fallback records it once.
        return window.fetch(base + '/mtc/event', {
            method: 'POST',
            credentials: 'include',
            headers: {
                'Content-Type': 'application/x-www-form-urlencoded',
                'X-Requested-With': 'XMLHttpRequest'
            },
            body: serialize(data)
        }).then(function (response) {
            if (!response.ok) {
                throw new Error('HTTP ' + response.status);
            }
            return response.json();
        }, function (error) {
            corsAllowed = false; // refused or unreachable: later calls go straight to the image
            throw error;
        }).then(function (body) {
            if (!body || body.success !== 1) {
                throw new Error('not recorded');
            }
            return body;
        });
    }

    function sendImage(data) {
        return new Promise(function (resolve, reject) {
            var image = new window.Image(1, 1);
            image.onload = function () { resolve({image: true}); };
            image.onerror = function () { reject(new Error('image failed')); };
            image.src = base + '/mtracking.gif?' + serialize(data);
        });
    }

    function remember(response) {
        if (!response || !response.id) {
            return;
        }
        storageSet('mtc_id', response.id);
        setCookie('mtc_id', response.id);
        if (response.device_id) {
            storageSet('mautic_device_id', response.device_id);
            setCookie('mautic_device_id', response.device_id);
        }
    }

    function call(callback, argument) {
        if (typeof callback === 'function') {
            try {
                callback(argument);
            } catch (e) {
                warn('callback failed: ' + e);
            }
        }
    }

    function sendPageview(event) {
        var data = collect();
        var deviceId = storageGet('mautic_device_id');
        if (deviceId) {
            data.mautic_device_id = deviceId;
        }
        var params = (event[2] && typeof event[2] === 'object') ? event[2] : {};
        for (var key in params) {
            if (Object.prototype.hasOwnProperty.call(params, key)) {
                data[key] = params[key];
            }
        }
        var callbacks = (event[3] && typeof event[3] === 'object') ? event[3] : {};
        delivery = delivery.then(function () {
            beforeFirst(data);
            return postEvent(data).then(function (response) {
                remember(response);
                delivered({event: event, params: data, response: response}, callbacks);
            }, function () {
                return sendImage(data).then(function () {
                    delivered({event: event, params: data, image: true}, callbacks);
                }, function (error) {
                    call(callbacks.onerror, error);
                });
            });
        });
        return delivery;
    }

    // Mautic's order: the call's onload, then what waited for the first delivery, then the
    // page's listeners of mauticPageEventDelivered.
    function delivered(detail, callbacks) {
        var argument = detail;
        if (detail.response) { // the server's JSON too, as this tracker always passed it
            argument = {};
            for (var key in detail.response) {
                if (Object.prototype.hasOwnProperty.call(detail.response, key)) {
                    argument[key] = detail.response[key];
                }
            }
            argument.event = detail.event;
            argument.params = detail.params;
            argument.response = detail.response;
        }
        call(callbacks.onload, argument);
        if (!MauticJS.firstDeliveryMade) {
            MauticJS.firstDeliveryMade = true;
            var waiting = MauticJS.postEventDeliveryQueue.splice(0);
            for (var i = 0; i < waiting.length; i++) {
                call(waiting[i], detail);
            }
        }
        MauticJS.dispatchEvent('mauticPageEventDelivered', detail);
    }

    function beforeFirst(params) {
        if (MauticJS.beforeFirstDeliveryMade) {
            return;
        }
        MauticJS.beforeFirstDeliveryMade = true;
        var waiting = MauticJS.preEventDeliveryQueue.splice(0);
        for (var i = 0; i < waiting.length; i++) {
            call(waiting[i], params); // they may add to what the first delivery sends
        }
    }

    // ---- the mt() function and its queue ------------------------------------------------------

    function handle(args) {
        var command = args[0];
        var type = args[1];
        MauticJS.inputQueue.push(args);
        if (command === 'send' && type === 'pageview') {
            sendPageview(args);
        } else {
            warn('unknown call mt(' + command + ', ' + type + ')');
        }
    }

    function mt() {
        MauticJS.dispatchEvent('eventAddedToMauticQueue', arguments);
        handle(arguments);
    }

    // Anything pushed onto mt.q after this point is handled at once.
    mt.q = {push: function (args) { MauticJS.dispatchEvent('eventAddedToMauticQueue', args); handle(args); }};
    mt.version = VERSION;
    window[name] = mt;
    MauticJS.input = mt;
    for (var i = 0; i < queued.length; i++) {
        handle(queued[i]);
    }
})(window, document);
