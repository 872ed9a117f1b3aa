// Mini Program side of the phone-number flow.
//
// WeChat bills every successful getPhoneNumber callback (¥0.03; the trial
// quota is 1000 per Mini Program), not the server exchange. So the button is
// disabled as soon as a tap produced a code, and a new tap is asked for only
// when the backend says the code is spent (outcome unknown, invalid code).

const BACKEND = 'https://api.example.com' // your backend, not wxphone

Page({
  data: {
    busy: false,
    quotaExhausted: false,
    phoneMasked: '',
    message: '',
  },

  onGetPhoneNumber(e) {
    if (this.data.busy) return // a second tap while the first is in flight
    const { code, errno, errMsg } = e.detail

    // errno 1400001: the Mini Program's phone-number quota is exhausted; no
    // code was issued and none will be until the quota is topped up.
    if (errno === 1400001) {
      this.setData({ quotaExhausted: true })
      return
    }
    // The user closed the sheet or refused ("getPhoneNumber:fail user deny"),
    // or the base library is too old to return a code: nothing was billed.
    if (!code) {
      const denied = errMsg && errMsg.indexOf('deny') >= 0
      this.setData({ message: denied ? '你已取消授权，可稍后重试。' : '获取手机号失败，请稍后重试。' })
      return
    }

    this.setData({ busy: true, message: '' })
    this.sendCode(code)
  },

  // sendCode gives the code to the backend, which exchanges it through
  // wxphone and binds the number to the logged-in user.
  sendCode(code) {
    wx.request({
      url: BACKEND + '/api/phone',
      method: 'POST',
      header: { Authorization: 'Bearer ' + (wx.getStorageSync('session') || '') },
      data: { code },
      success: (res) => {
        const body = res.data || {}
        if (res.statusCode === 200 && body.ok) {
          this.setData({ busy: false, phoneMasked: body.phoneMasked })
          return
        }
        if (body.retap) {
          // The code is spent or may be: only a new tap gives a new one.
          this.setData({ busy: false, message: body.message || '请重新点击按钮授权手机号。' })
          return
        }
        // Temporary failure: the backend already retried with the same code.
        this.setData({ busy: false, message: body.message || '服务繁忙，请稍后重试。' })
      },
      fail: () => {
        // The backend may or may not have exchanged the code; it keeps the
        // result for five minutes, so sending the same code again is safe.
        this.setData({ message: '网络异常，正在重试…' })
        setTimeout(() => this.sendCode(code), 1500)
      },
    })
  },
})
